"""Tables of the task service, their indexes and the explicit schema set-up.

A task is ``free`` until claimed. A claim is a lease: ``lease_id`` (a secret the claimant gets
back), ``claimed_by``, ``claimed_at`` and ``lease_expires_at``. The claimant either completes
the task (``completed_at``: done for good) or releases it (free again); a lease that runs out
makes the task claimable again without any background job: claiming looks for free tasks and
for expired leases alike, in id order.
"""
from __future__ import annotations

from peewee import (
    BigIntegerField,
    BooleanField,
    Case,
    CharField,
    Database,
    DatabaseProxy,
    ForeignKeyField,
    IdentityField,
    IntegerField,
    Model,
    TextField,
    UUIDField,
    fn,
)
from playhouse.postgres_ext import DateTimeTZField

from .prepared import Prepared, Slot

# Bound to the application's database by ``database.init_app``.
db = DatabaseProxy()

STATS_ROW = 1


class BaseModel(Model):
    class Meta:
        database = db


class User(BaseModel):
    class Meta:
        # Not peewee's default "user": a reserved word in PostgreSQL (C2-38), which hand-written
        # SQL must quote, and which unquoted silently means CURRENT_USER (`SELECT count(*) FROM
        # user` counts the role, not the users). Plural, as the API's /users. An existing
        # database of the old name moves with ALTER TABLE "user" RENAME TO users.
        table_name = "users"

    id = IdentityField()
    # Stored normalised (lower case); uniqueness is the case-insensitive index below.
    email = CharField(max_length=254)
    tasks_number = IntegerField(default=0)
    # SHA-256 of the user's opaque API token; the token itself is never stored.
    token_hash = CharField(max_length=64, null=True, unique=True)


class Task(BaseModel):
    id = IdentityField()
    free = BooleanField(default=True)
    metadata = TextField()
    owner = ForeignKeyField(User, on_delete="CASCADE", index=False)
    image_type = CharField(max_length=100, null=True)  # MIME type detected at upload
    image_ext = CharField(max_length=10, null=True)  # file name extension, without the dot
    claimed_by = ForeignKeyField(User, null=True, on_delete="SET NULL", index=False,
                                 backref="claims", column_name="claimed_by_id")
    claimed_at = DateTimeTZField(null=True)
    lease_id = UUIDField(null=True)
    lease_expires_at = DateTimeTZField(null=True)
    completed_at = DateTimeTZField(null=True)


class Stats(BaseModel):
    """One row: service-wide counters that only grow (not lowered when a user is deleted)."""

    id = IntegerField(primary_key=True)
    tasks_created = BigIntegerField(default=0)


# A claim whose lease ran out, not completed: as good as free.
LEASE_EXPIRED = (~Task.free & Task.completed_at.is_null()
                 & (Task.lease_expires_at <= fn.now()))
CLAIMABLE = Task.free | LEASE_EXPIRED
# The state a reader sees, computed by the database's clock at read time.
STATE = Case(None, [(Task.completed_at.is_null(False), "done"), (CLAIMABLE, "free")],
             "claimed").alias("state")

User.add_index(User.index(fn.lower(User.email), unique=True, name="users_email_lower"))
Task.add_index(Task.index(Task.owner, Task.id, name="task_owner_id_id"))
# Only free tasks, in FIFO order: what claiming a task looks for first.
Task.add_index(Task.index(Task.owner, Task.id, where=Task.free, name="task_free_owner_id_id"))
# Only open claims, by expiry: where claiming finds leases that ran out.
Task.add_index(Task.index(Task.owner, Task.lease_expires_at,
                          where=(~Task.free & Task.completed_at.is_null()),
                          name="task_open_claim_owner_id_expiry"))

MODELS = (User, Task, Stats)


def create_schema(database: Database) -> None:
    """Create the tables, indexes and the counters row (idempotent). A deployment step, not a
    side effect of the first request."""
    with database.connection_context(), database.bind_ctx(MODELS), database.atomic():
        database.create_tables(MODELS)
        Stats.insert(id=STATS_ROW, tasks_created=0).on_conflict_ignore().execute()


_OWNER = Slot(0)
COUNT_FOR_OWNER = Prepared(User.update(tasks_number=User.tasks_number + 1)
                           .where(User.id == _OWNER), User, owner=_OWNER)
COUNT_IN_TOTAL = Prepared(Stats.update(tasks_created=Stats.tasks_created + 1)
                          .where(Stats.id == STATS_ROW), Stats)


def count_created_task(user_id: int) -> None:
    """Increment the owner's and the global counters in SQL (call inside the creating
    transaction, as its last statements: the row locks are then held only until COMMIT)."""
    COUNT_FOR_OWNER.run(db, owner=user_id)
    COUNT_IN_TOTAL.run(db)


def total_tasks_created() -> int:
    return Stats.select(Stats.tasks_created).where(Stats.id == STATS_ROW).scalar() or 0
