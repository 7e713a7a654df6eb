"""Hot statements compiled once.

Building a query with peewee and compiling it to SQL costs more Python time per request than
PostgreSQL takes to run it (about a third of a list request, measured by
``benchmarks/case2``). The statements every request or a hot path sends are compiled once, at
import, from the same peewee queries: the SQL text and its fixed parameters stay what peewee
renders, only the values of the marked slots change per call. They run through the database's
``execute_sql``, so errors, the response watchdog and the connection pool are the same as for
any other query.
"""
from __future__ import annotations

from peewee import (
    BooleanField,
    CharField,
    DateTimeField,
    ForeignKeyField,
    IntegerField,
    PostgresqlDatabase,
    TextField,
)

SQL_DIALECT = PostgresqlDatabase(None)  # compiles only (never connects): the service's dialect

# Passed through as psycopg2 returns them: the driver already gives the Python type peewee's
# field would convert to (int, bool, str, aware datetime). Any other field is converted.
_DRIVER_TYPED = (IntegerField, BooleanField, CharField, TextField, DateTimeField)


class Slot(int):
    """A placeholder value of a compiled statement: a negative integer no real value takes,
    found among the compiled parameters as itself or as its text (a text field's conversion
    makes it a string)."""

    def __new__(cls, number: int):
        return super().__new__(cls, -(1 << 40) - number)

    def found_in(self, param) -> bool:
        return (isinstance(param, int) and param == self) or param == str(int(self))


def _converter(field):
    while isinstance(field, ForeignKeyField):
        field = field.rel_field
    return None if isinstance(field, _DRIVER_TYPED) else field.python_value


class Prepared:
    """A peewee query compiled once; ``run(db, slot=value, ...)`` sends its text with the slots
    filled. Rows come back as dicts keyed by field name (as ``.dicts()`` gives them), values
    converted as peewee's fields would: no model objects, no per-row query machinery."""

    def __init__(self, query, model, **slots: Slot):
        self.sql, params = SQL_DIALECT.get_sql_context().sql(query).query()
        self._params = list(params)
        self._slots = {}
        for name, slot in slots.items():
            where = [i for i, p in enumerate(self._params) if slot.found_in(p)]
            if not where:
                raise ValueError(f"slot {name} missing from {self.sql}")
            self._slots[name] = where  # every place the value goes (an owner may go twice)
        self._columns = {column: (field.name, _converter(field))
                         for column, field in model._meta.columns.items()}

    def params(self, values: dict) -> list:
        params = list(self._params)
        for name, positions in self._slots.items():
            for i in positions:
                params[i] = values[name]
        return params

    def run(self, database, **values) -> list[dict]:
        cursor = database.execute_sql(self.sql, self.params(values))
        try:
            if cursor.description is None:  # no RETURNING
                return []
            keys, convert = [], []
            for column in (d[0] for d in cursor.description):
                key, converter = self._columns.get(column, (column, None))
                keys.append(key)
                if converter is not None:
                    convert.append((key, converter))
            rows = [dict(zip(keys, row)) for row in cursor.fetchall()]
        finally:
            cursor.close()
        for row in rows if convert else ():
            for key, converter in convert:
                row[key] = converter(row[key])
        return rows
