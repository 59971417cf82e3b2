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
import concurrent.futures
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
    FROM pg_class WHERE relnamespace = to_regnamespace(%(schema)s::text)
    UNION ALL
    SELECT format('column %%s %%s %%s %%s %%s %%s', c.relname, a.attnum, a.attname,
                  format_type(a.atttypid, a.atttypmod), a.attnotnull,
                  pg_get_expr(d.adbin, d.adrelid))
    FROM pg_attribute a
    JOIN pg_class c ON c.oid = a.attrelid
    LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
    WHERE c.relnamespace = to_regnamespace(%(schema)s::text) AND NOT a.attisdropped
    UNION ALL
    SELECT format('index %%s', pg_get_indexdef(indexrelid))
    FROM pg_index JOIN pg_class c ON c.oid = indexrelid
    WHERE c.relnamespace = to_regnamespace(%(schema)s::text)
    UNION ALL
    SELECT format('constraint %%s %%s', conname, pg_get_constraintdef(oid))
    FROM pg_constraint WHERE connamespace = to_regnamespace(%(schema)s::text)
    UNION ALL
    SELECT format('trigger %%s %%s', tgenabled, pg_get_triggerdef(t.oid))
    FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
    WHERE c.relnamespace = to_regnamespace(%(schema)s::text) AND NOT t.tgisinternal
    UNION ALL
    SELECT format('function %%s', pg_get_functiondef(oid))
    FROM pg_proc WHERE pronamespace = to_regnamespace(%(schema)s::text)
    UNION ALL
    SELECT format('sequence %%s %%s %%s %%s %%s', c.relname, s.seqstart,
                  s.seqincrement, s.seqmin, s.seqcycle)
    FROM pg_sequence s JOIN pg_class c ON c.oid = s.seqrelid
    WHERE c.relnamespace = to_regnamespace(%(schema)s::text)
    UNION ALL
    SELECT format('statistics %%s %%s', tablename, attname)
    FROM pg_stats WHERE schemaname = %(schema)s::text
    UNION ALL
    SELECT format('extended statistics %%s', stxname)
    FROM pg_statistic_ext WHERE stxnamespace = to_regnamespace(%(schema)s::text)
) AS catalog
"""
"""One hash of everything of a schema a test could change, besides its rows."""

_MIGRATIONS = "SELECT version FROM {}.{} ORDER BY version"


class SchemaPool:
    """Schemas of one server, set up by `PostgresStore.setup` with one layout.

    A schema given back is emptied on a thread of the pool's while the next test
    runs on another schema; `take` waits for it only when it holds `ROTATION`
    schemas already. An error emptying one fails the next `take`.
    """

    ROTATION = 3
    """Schemas made before `take` waits for one being emptied."""

    def __init__(self, url: str, *, message_partitions: int | None = None) -> None:
        self.url = url
        self.message_partitions = message_partitions
        """The layout: ``messages`` partitioned into this many tables, or one."""
        self._lock = threading.Lock()
        self._emptied = threading.Condition(self._lock)
        self._free: list[str] = []
        self._made = 0
        self._pending = 0
        self._error: BaseException | None = None
        self._emptier = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="schema-pool"
        )
        self._pristine: str | None = None
        self._conn: Any = None
        self._tables: list[str] = []
        """The reference schema's tables but ``schema_migrations``."""
        self._versions: Any = None
        """Its ``schema_migrations`` rows."""
        atexit.register(self.close)

    def take(self) -> str:
        """The name of a schema set up and empty."""
        with self._lock:
            while not self._free and self._pending and self._made >= self.ROTATION:
                self._emptied.wait()
            self._raise_error()
            if self._free:
                return self._free.pop()
            self._made += 1
        # Set up on the test's thread, while the pool's may be emptying another.
        return self._new()

    def _new(self) -> str:
        """Set up a new schema; the first one's fingerprint is what new is."""
        from langchain_retro.stores.postgres import PostgresStore  # noqa: PLC0415

        schema = f"test_{uuid.uuid4().hex[:12]}"
        with PostgresStore.from_connection_string(
            self.url, schema=schema, message_partitions=self.message_partitions
        ) as store:
            store.setup()
        with self._lock:
            if self._pristine is not None:
                return schema
        # The first schema only: no other is handed out nor given back before.
        conn = self._connection()
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
        self._pristine = self._fingerprint(conn, schema)
        return schema

    def give_back(self, schema: str, *, reusable: bool) -> None:
        """Have ``schema`` emptied for a later test, or dropped if it is not as new.

        Args:
            schema: A schema `take` gave, or another the test made (then
                ``reusable`` is false).
            reusable: Whether the schema may be handed out again, if as new.
        """
        with self._lock:
            self._raise_error()
            self._pending += 1
        self._emptier.submit(self._give_back_now, schema, reusable=reusable)

    def _raise_error(self) -> None:
        error, self._error = self._error, None
        if error is not None:
            msg = f"emptying a test schema failed: {error!r}"
            raise RuntimeError(msg) from error

    def _give_back_now(self, schema: str, *, reusable: bool) -> None:
        import psycopg  # noqa: PLC0415

        try:
            try:
                self._give_back(self._connection(), schema, reusable=reusable)
            except psycopg.OperationalError:
                # A test ended the server's connections (the hardening tests do).
                self._close_connection()
                self._give_back(self._connection(), schema, reusable=reusable)
        except BaseException as exc:
            with self._lock:
                self._error = exc
        finally:
            with self._lock:
                self._pending -= 1
                self._emptied.notify_all()

    def _give_back(self, conn: Any, schema: str, *, reusable: bool) -> None:
        if reusable and self._empty(conn, schema):
            with self._lock:
                self._free.append(schema)
            return
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        if reusable:
            with self._lock:
                self._made -= 1

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
        self._emptier.shutdown(wait=True)
        with self._lock:
            free, self._free = self._free, []
        try:
            for schema in free:
                self._connection().execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        finally:
            self._close_connection()


_pools: dict[tuple[str, int | None], SchemaPool] = {}


def schema_pool(url: str, *, message_partitions: int | None = None) -> SchemaPool:
    """The process's pool of schemas of one layout on the server at ``url``."""
    key = (url, message_partitions)
    if key not in _pools:
        _pools[key] = SchemaPool(url, message_partitions=message_partitions)
    return _pools[key]
