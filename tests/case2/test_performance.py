"""Query counts and timings as users and tasks grow (in-process, statements counted at
peewee's Database.execute_sql)."""
from __future__ import annotations

import time

from workbench import results

from .helpers import QueryCounter, evidence

# One dict per side: the fixed side's rows must never land in the as-given figures.
_perf: dict = {"as_given": {}, "fixed": {}}


def _record(side):
    if side == "as_given":  # the review's figures are the as-given service's
        results.record("case2_perf", _perf["as_given"])


def _seed(svc, users: int, tasks_per_user: int) -> dict:
    """Bulk rows straight into the service's tables (tables exist after the first request)."""
    first = svc.api.create_user("seed@example.com")
    users_table = svc.db.users_table
    svc.db.all(f"INSERT INTO {users_table} (email, tasks_number) "
               "SELECT 'u' || g || '@example.com', %s FROM generate_series(1, %s) g",
               tasks_per_user, users - 1)
    svc.db.all("INSERT INTO task (free, metadata, owner_id) "
               f"SELECT true, 'm', u.id FROM {users_table} u, generate_series(1, %s)", tasks_per_user)
    return first


@evidence("C2-24")
def test_task_list_issues_one_query_per_task(service, monkeypatch, side):
    counter = QueryCounter().install(monkeypatch)
    user = _seed(service, users=20, tasks_per_user=10)  # 200 tasks of 20 owners
    rows = []
    for limit in (200, 50, 10):
        service.db.all("DELETE FROM task WHERE id > %s", limit)
        with counter.measure() as m:
            start = time.perf_counter()
            r = service.api.get("/tasks", user)
            elapsed = time.perf_counter() - start
        assert r.status_code == 200
        rows.append({"tasks": len(r.json()), "statements": m["count"], "seconds": round(elapsed, 4)})
    _perf[side]["get_tasks"] = rows
    _record(side)
    if side == "as_given":
        # get user + select tasks + one SELECT of the owner per task (model_to_dict recurse).
        assert [(r["tasks"], r["statements"]) for r in rows] == [(200, 202), (50, 52), (10, 12)]
    else:
        assert len({r["statements"] for r in rows}) == 1


@evidence("C2-25")
def test_total_loads_every_user_row(service, monkeypatch, side):
    counter = QueryCounter().install(monkeypatch)
    user = _seed(service, users=5000, tasks_per_user=0)
    with counter.measure() as m:
        start = time.perf_counter()
        r = service.api.get("/total_tasks_created", user)
        elapsed = time.perf_counter() - start
    users_table = service.db.users_table
    fetched = service.db.one(f"SELECT count(*) FROM {users_table}")
    start = time.perf_counter()
    service.db.one(f"SELECT sum(tasks_number) FROM {users_table}")
    sum_seconds = time.perf_counter() - start
    _perf[side]["total_tasks_created"] = {"users": fetched, "statements": m["count"],
                                    "seconds": round(elapsed, 4), "sql_sum_seconds": round(sum_seconds, 4)}
    _record(side)
    assert r.status_code == 200
    if side == "as_given":
        sql = [s for s in m["statements"] if f"FROM {users_table}" in s][-1]
        assert "SUM" not in sql.upper() and sql.startswith('SELECT "t1"."id", "t1"."email", "t1"."tasks_number"')
    else:
        # The total is one monotonic counter (C2-22): a single-row read, not the user rows;
        # the only statement on the users table is the token lookup by its unique index.
        user_reads = [s for s in m["statements"] if f"FROM {users_table}" in s]
        assert len(user_reads) == 1 and "WHERE" in user_reads[0] and "LIMIT" in user_reads[0]
        assert m["count"] == 2


@evidence("C2-26")
def test_take_free_task_plan_scans_taken_tasks(service, side):
    user = _seed(service, users=200, tasks_per_user=200)
    service.db.all("UPDATE task SET free = false WHERE owner_id = %s", user["id"])
    service.db.all("ANALYZE task")
    indexes = sorted(r[0] for r in service.db.all(
        "SELECT indexdef FROM pg_indexes WHERE tablename = 'task'"))
    plan = "\n".join(r[0] for r in service.db.all(
        "EXPLAIN (ANALYZE, BUFFERS) SELECT id FROM task WHERE owner_id = %s AND free = true LIMIT 1",
        user["id"]))
    _perf[side]["take_free_task_plan"] = {"indexes": indexes, "plan": plan}
    _record(side)
    if side == "as_given":
        assert indexes == ['CREATE INDEX task_owner_id ON public.task USING btree (owner_id)',
                           'CREATE UNIQUE INDEX task_pkey ON public.task USING btree (id)']
        assert "Rows Removed by Filter: 200" in plan  # every taken task is read to find none
    else:
        assert "Rows Removed by Filter" not in plan


@evidence("C2-27")
def test_first_request_creates_tables(make_service, monkeypatch, side):
    counter = QueryCounter().install(monkeypatch)
    svc = make_service(warm=False)
    with counter.measure() as first:
        svc.api.request("POST", "/users", json={"email": "a@example.com"})
    with counter.measure() as second:
        svc.api.request("POST", "/users", json={"email": "b@example.com"})
    ddl = [s for s in first["statements"] if s.startswith("CREATE")]
    _perf[side]["first_request"] = {"statements": first["count"], "ddl": len(ddl),
                              "second_request_statements": second["count"]}
    _record(side)
    if side == "as_given":
        assert ddl == ['CREATE TABLE IF NOT EXISTS "user" ("id" INT GENERATED BY DEFAULT AS IDENTITY '
                       'NOT NULL PRIMARY KEY, "email" VARCHAR(254) NOT NULL, "tasks_number" INTEGER NOT NULL)',
                       'CREATE UNIQUE INDEX IF NOT EXISTS "user_email" ON "user" ("email")',
                       'CREATE TABLE IF NOT EXISTS "task" ("id" INT GENERATED BY DEFAULT AS IDENTITY '
                       'NOT NULL PRIMARY KEY, "free" BOOLEAN NOT NULL, "metadata" TEXT NOT NULL, '
                       '"owner_id" INTEGER NOT NULL, FOREIGN KEY ("owner_id") REFERENCES "user" ("id") '
                       'ON DELETE CASCADE)',
                       'CREATE INDEX IF NOT EXISTS "task_owner_id" ON "task" ("owner_id")']
        assert first["count"] > second["count"]
    else:
        assert ddl == []
