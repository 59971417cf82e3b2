"""Set-up PostgreSQL schemas, emptied after a test and handed to the next one.

Creating a schema and its tables, then dropping them, costs about 0.1 s a test,
most of the PostgreSQL cases' time. So `conftest.stores_of` asks `SchemaPool` for
a schema: a new one, or one an earlier test used, emptied (one ``TRUNCATE ...
RESTART IDENTITY CASCADE``). A used schema is handed out again only when, emptied,
it is exactly what a new one is: the same tables, columns, indexes, constraints,
triggers, functions and sequences, the same ``schema_migrations`` rows, and no
planner statistics (``ANALYZE`` leaves them, and they would change the next test's
plans). Anything else, such as a test's own tables or a partitioned layout, and the
schema is dropped as before. So no test sees another's rows nor its DDL.
"""

from __future__ import annotations

import atexit
import threading
import uuid
from typing import Any

LAYOUT_OPTIONS = frozenset({"table_prefix", "message_partitions"})
"""`PostgresStore` options that shape the tables `setup` creates: a store made with
any of them gets a new schema, as `setup` only applies them to a new one."""

_FINGERPRINT = """
SELECT md5(string_agg(
    replace(line, %(schema)s::text, '<schema>'), E'\\n' ORDER BY line
))
FROM (
    SELECT format('relation %%s %%s %%s %%s %%s', relname, relkind, relpersistence,
                  relrowsecurity, reloptions) AS line
    FROM pg_class WHERE relnamespace = %(schema)s::text::regnamespace
    UNION ALL
    SELECT format('column %%s %%s %%s %%s %%s %%s', c.relname, a.attnum, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = %(schema)s::text::regnamespace AND NOT a.attisdropped
    UNION ALL
    SELECT format('index %%s', pg_get_indexdef(indexrelid))
    FROM pg_index JOIN pg_class c ON c.oid = indexrelid
    WHERE c.relnamespace = %(schema)s::text::regnamespace
    UNION ALL
    SELECT format('constraint %%s %%s', conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = %(schema)s::text::regnamespace
    UNION ALL
    SELECT format('trigger %%s %%s', tgenabled, pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = %(schema)s::text::regnamespace
    UNION ALL
    SELECT format('function %%s', pg_get_functiondef(oid))
    FROM pg_proc WHERE pronamespace = %(schema)s::text::regnamespace
    UNION ALL
    SELECT format('sequence %%s %%s %%s %%s %%s', c.relname, s.seqstart,
                  s.seqincrement, s.seqmin, s.seqcycle)
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
    WHERE c.relnamespace = %(schema)s::text::regnamespace
    UNION ALL
    SELECT format('statistics %%s %%s', tablename, attname)
    FROM pg_stats WHERE schemaname = %(schema)s::text
    UNION ALL
    SELECT format('extended statistics %%s', stxname)
    FROM pg_statistic_ext WHERE stxnamespace = %(schema)s::text::regnamespace
) AS catalog
"""
"""One hash of everything of a schema a test could change, besides its rows."""

_MIGRATIONS = "SELECT version FROM {}.{} ORDER BY version"


class SchemaPool:
    """Schemas of one server, set up by `PostgresStore.setup` with its defaults."""

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._free: list[str] = []
        self._pristine: str | None = None
        self._conn: Any = None
        self._tables: list[str] = []
        """The reference schema's tables but ``schema_migrations``."""
        self._versions: Any = None
        """Its ``schema_migrations`` rows."""
        atexit.register(self.close)

    def take(self) -> str:
        """A schema's name: one set up and empty, or a new one."""
        with self._lock:
            if self._pristine is None:
                self._pristine = self._reference()
            if self._free:
                return self._free.pop()
        return f"test_{uuid.uuid4().hex[:12]}"

    def _reference(self) -> str:
        """Set up a new schema, the first one handed out; its fingerprint."""
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        schema = f"test_{uuid.uuid4().hex[:12]}"
        with PostgresStore.from_connection_string(self.url, schema=schema) as store:
            store.setup()
        conn = self._connection()
        found = self._fingerprint(conn, schema)
        self._tables = [
            name
            for (name,) in conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = %s "
                "AND tablename <> 'retro_schema_migrations' ORDER BY 1",
                (schema,),
            )
        ]
        self._versions = conn.execute(
            f'SELECT array_agg(version ORDER BY version) FROM "{schema}".'
            '"retro_schema_migrations"'
        ).fetchone()
        self._free.append(schema)
        return found

    def give_back(self, schema: str, *, reusable: bool) -> None:
        """Empty ``schema`` for the next test, or drop it if it is not as new."""
        import psycopg  # noqa: PLC0415

        try:
            self._give_back(self._connection(), schema, reusable=reusable)
        except psycopg.OperationalError:
            # A test ended the server's connections (the hardening tests do).
            self._close_connection()
            self._give_back(self._connection(), schema, reusable=reusable)

    def _give_back(self, conn: Any, schema: str, *, reusable: bool) -> None:
        if reusable and self._empty(conn, schema):
            with self._lock:
                self._free.append(schema)
            return
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')

    def _connection(self) -> Any:
        """The pool's own connection: its catalog caches stay warm across tests."""
        import psycopg  # noqa: PLC0415

        if self._conn is None or self._conn.closed:
            self._conn = psycopg.connect(self.url, autocommit=True)
            # A test that left a lock behind fails here instead of hanging.
            self._conn.execute("SET lock_timeout = '30s'")
        return self._conn

    def _close_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _empty(self, conn: Any, schema: str) -> bool:
        """Whether the schema is as a new one but for its rows; if so, empty it."""
        if self._fingerprint(conn, schema) != self._pristine:
            return False
        # Its tables are then the reference's, ``schema_migrations`` among them.
        tables = ", ".join(f'"{schema}"."{name}"' for name in self._tables)
        cursor = conn.execute(
            f'SELECT array_agg(version ORDER BY version) FROM "{schema}".'
            f'"retro_schema_migrations"; TRUNCATE {tables} RESTART IDENTITY CASCADE'
        )
        return cursor.fetchone() == self._versions

    @staticmethod
    def _fingerprint(conn: Any, schema: str) -> str:
        (catalog,) = conn.execute(_FINGERPRINT, {"schema": schema}).fetchone()
        return str(catalog)

    def close(self) -> None:
        """Drop the schemas waiting for a test."""
        with self._lock:
            free, self._free = self._free, []
        try:
            for schema in free:
                self._connection().execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            self._close_connection()


_pools: dict[str, SchemaPool] = {}


def schema_pool(url: str) -> SchemaPool:
    """The process's pool of schemas on the server at ``url``."""
    if url not in _pools:
        _pools[url] = SchemaPool(url)
    return _pools[url]
