"""`PostgresStore`'s id-keeping imports: the statements, built without I/O.

Each import is one ``INSERT ... SELECT FROM unnest(...) WITH ORDINALITY ... ORDER BY
ord ON CONFLICT (id) DO NOTHING RETURNING id``: one round trip for a whole batch,
rows taking their ``seq`` in the given order, ids already present left alone (so a
copy run again writes nothing twice). Parameters only: no value is spliced into SQL.
"""

from __future__ import annotations

from collections.abc import Sequence

from langchain_retro._metadata import dumps
from langchain_retro.stores._postgres_runs import _stored_body
from langchain_retro.stores._postgres_sql import _Q, _Names
from langchain_retro.stores.base import (
    ASSISTANT_FIELDS,
    StoredAssistant,
    StoredRun,
    ThreadCopy,
)

__all__ = [
    "_q_import_assistants",
    "_q_import_runs",
    "_q_import_threads",
    "_q_threads_present",
]


def _q_import_assistants(names: _Names, assistants: Sequence[StoredAssistant]) -> _Q:
    """Insert assistants as they are; returns the ids written."""
    return _Q(
        names.sql(
            "INSERT INTO {assistants} ({assistant_columns}) "
            "SELECT n.id, n.created_at, n.metadata::jsonb, n.name, n.description, "
            "n.instructions, n.model, n.temperature, n.top_p "
            "FROM unnest(%s::text[], %s::bigint[], %s::text[], %s::text[], "
            "%s::text[], %s::text[], %s::text[], %s::float8[], %s::float8[]) "
            "WITH ORDINALITY AS n (id, created_at, metadata, name, description, "
            "instructions, model, temperature, top_p, ord) "
            "ORDER BY n.ord ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        (
            [a.id for a in assistants],
            [a.created_at for a in assistants],
            [dumps(a.metadata) for a in assistants],
            *([getattr(a, name) for a in assistants] for name in ASSISTANT_FIELDS),
        ),
    )


def _q_import_threads(names: _Names, threads: Sequence[ThreadCopy]) -> _Q:
    """Insert threads as they are, with their token totals; returns the ids written.

    The statement-level trigger fills ``thread_metadata`` from the rows inserted.
    """
    return _Q(
        names.sql(
            "INSERT INTO {threads} (id, created_at, metadata, prompt_tokens, "
            "completion_tokens, total_tokens) "
            "SELECT n.id, n.created_at, n.metadata::jsonb, n.prompt, n.completion, "
            "n.total FROM unnest(%s::text[], %s::bigint[], %s::text[], "
            "%s::bigint[], %s::bigint[], %s::bigint[]) WITH ORDINALITY "
            "AS n (id, created_at, metadata, prompt, completion, total, ord) "
            "ORDER BY n.ord ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        (
            [t.id for t in threads],
            [t.created_at for t in threads],
            [dumps(t.metadata) for t in threads],
            [t.usage.prompt_tokens for t in threads],
            [t.usage.completion_tokens for t in threads],
            [t.usage.total_tokens for t in threads],
        ),
    )


def _q_threads_present(names: _Names, thread_ids: list[str]) -> _Q:
    """The ids of ``thread_ids`` the store holds, their rows locked against deletes."""
    return _Q(
        names.sql(
            "SELECT id FROM {threads} WHERE id = ANY(%s::text[]) "
            "ORDER BY seq FOR KEY SHARE"
        ),
        (thread_ids,),
    )


def _q_import_runs(names: _Names, runs: Sequence[StoredRun]) -> _Q:
    """Insert runs (already settled) on their threads; returns the ids written."""
    return _Q(
        names.sql(
            "INSERT INTO {runs} (thread_seq, id, status, created_at, lease_owner, "
            "body) SELECT t.seq, n.id, n.status, n.created_at, NULL, n.body::jsonb "
            "FROM unnest(%s::text[], %s::text[], %s::text[], %s::bigint[], "
            "%s::text[]) WITH ORDINALITY "
            "AS n (thread_id, id, status, created_at, body, ord) "
            "JOIN {threads} t ON t.id = n.thread_id "
            "ORDER BY n.ord ON CONFLICT (id) DO NOTHING RETURNING id"
        ),
        (
            [r.thread_id for r in runs],
            [r.id for r in runs],
            [r.status for r in runs],
            [r.created_at for r in runs],
            [_stored_body(r) for r in runs],
        ),
    )
