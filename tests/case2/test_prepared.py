"""The fixed service's hot statements, compiled once (``reference/case2/fixed/prepared.py``),
send exactly what peewee sends for the same query and read back exactly what peewee reads."""
from __future__ import annotations

import uuid

import pytest

from .conftest import fixed_service_module


@pytest.fixture
def side():
    return "fixed"


@pytest.fixture
def fixed_db(fresh_database_url, tmp_path):
    module = fixed_service_module(fresh_database_url, tmp_path / "images")
    yield module.db
    module.db.close_all()


def _peewee(query):
    from reference.case2.fixed.prepared import SQL_DIALECT

    return SQL_DIALECT.get_sql_context().sql(query).query()


def _claim_query(user: int, lease: uuid.UUID, seconds: int):
    from peewee import SQL, fn

    from reference.case2.fixed.models import CLAIMABLE, Task

    oldest = (Task.select(Task.id).where((Task.owner == user) & CLAIMABLE).order_by(Task.id)
              .limit(1).for_update("FOR UPDATE SKIP LOCKED"))
    return (Task.update(free=False, claimed_by=user, claimed_at=fn.now(), lease_id=lease,
                        lease_expires_at=fn.now() + SQL("make_interval(secs => %s)", [seconds]))
            .where(Task.id == oldest).returning(Task))


def test_compiled_statements_are_peewees_text_and_parameters():
    from reference.case2.fixed.auth import BY_TOKEN
    from reference.case2.fixed.models import COUNT_FOR_OWNER, STATS_ROW, Stats, Task, User
    from reference.case2.fixed.models import COUNT_IN_TOTAL
    from reference.case2.fixed.reconcile import placement_lock
    from reference.case2.fixed.views import tasks_with_state
    from reference.case2.fixed.views.claims import CLAIM
    from reference.case2.fixed.views.tasks import INSERT, PAGE

    lease = uuid.uuid4()
    cases = [
        (BY_TOKEN, {"token_hash": "ab" * 32},
         User.select().where(User.token_hash == "ab" * 32).limit(1)),
        (PAGE, {"user": 7, "after": 3, "limit": 51},
         tasks_with_state().where((Task.owner == 7) & (Task.id > 3)).order_by(Task.id).limit(51)),
        (INSERT, {"user": 7, "meta": "m", "image_type": "image/png", "image_ext": "png"},
         Task.insert(owner=7, metadata="m", image_type="image/png", image_ext="png")
         .returning(Task, placement_lock(Task.id))),
        (CLAIM, {"user": 7, "lease": lease.hex, "seconds": 300}, _claim_query(7, lease, 300)),
        (COUNT_FOR_OWNER, {"owner": 7},
         User.update(tasks_number=User.tasks_number + 1).where(User.id == 7)),
        (COUNT_IN_TOTAL, {},
         Stats.update(tasks_created=Stats.tasks_created + 1).where(Stats.id == STATS_ROW)),
    ]
    for prepared, values, query in cases:
        assert (prepared.sql, prepared.params(values)) == _peewee(query)


def test_a_slot_missing_from_the_query_is_refused():
    from reference.case2.fixed.models import Task
    from reference.case2.fixed.prepared import Prepared, Slot

    with pytest.raises(ValueError, match="slot owner missing"):
        Prepared(Task.select().where(Task.owner == 1), Task, owner=Slot(5))


def test_rows_are_peewees_dicts(fixed_db):
    from reference.case2.fixed.models import Task, User
    from reference.case2.fixed.views import tasks_with_state
    from reference.case2.fixed.views.claims import CLAIM
    from reference.case2.fixed.views.tasks import INSERT, PAGE

    with fixed_db.connection_context():
        user = User.create(email="p@example.com", token_hash="cd" * 32)
        for meta in ("first", "second", "ünïcode \U0001f600"):
            inserted = INSERT.run(fixed_db, user=user.id, meta=meta, image_type=None,
                                  image_ext=None)
            assert len(inserted) == 1 and inserted[0]["metadata"] == meta
        claimed = CLAIM.run(fixed_db, user=user.id, lease=uuid.uuid4().hex, seconds=60)
        assert isinstance(claimed[0]["lease_id"], uuid.UUID)  # converted as the field would
        expected = list(tasks_with_state().where((Task.owner == user.id) & (Task.id > 0))
                        .order_by(Task.id).limit(10))
        got = PAGE.run(fixed_db, user=user.id, after=0, limit=10)
        assert got == expected
        assert [row["state"] for row in got] == ["claimed", "free", "free"]
        assert PAGE.run(fixed_db, user=user.id + 1, after=0, limit=10) == []
