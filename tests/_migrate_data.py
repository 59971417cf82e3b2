"""Stores full of data for the migrate tests, and a snapshot to compare them by.

`fill` writes through the ordinary store API: assistants with every native field,
threads with free and typed metadata (typed values long enough to span keys),
messages of every type with caller ids, times and unicode, runs begun and finished
(usage, reply links, ``hwm`` moved with the reply). `snapshot` reads a store back
as plain data: two stores with equal snapshots hold the same records.
"""

from __future__ import annotations

import random
from typing import Any

from hypothesis import strategies as st
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.messages import BaseMessage as LCBaseMessage
from test_properties import CODECS, FIELD_VALUES, MESSAGES

from langchain_retro._messages import role_of, to_payload
from langchain_retro._metadata import MetadataLimits, MetadataPatch, encode_fields
from langchain_retro.stores.base import (
    BaseStore,
    NewMessage,
    NewRun,
    RunUpdate,
    RunUsage,
    ThreadQuery,
)

SPAN = MetadataLimits(max_value_length=48)
"""Typed values are encoded for this limit, so long ones span ``key#N`` entries."""

TYPED = (
    st.fixed_dictionaries({}, optional=dict(FIELD_VALUES))
    .map(lambda values: encode_fields(CODECS, values, SPAN))
    .filter(lambda encoded: "\x00" not in "".join(encoded.values()))
)
"""Typed fields of every kind, encoded as metadata (long values span keys)."""
# PostgreSQL's text and jsonb hold no NUL character: a store-wide limit of that
# backend (it refuses such a write with StoreError), not of a copy.
NO_NUL = st.characters(exclude_characters="\x00")
THREAD = st.fixed_dictionaries(
    {
        "free": st.dictionaries(
            st.sampled_from(["user", "topic", "note"]),
            st.text(NO_NUL, max_size=200),
        ),
        "typed": TYPED,
        "messages": st.lists(
            MESSAGES.filter(lambda m: "\x00" not in role_of(m)), max_size=6
        ),
        "runs": st.integers(min_value=0, max_value=2),
    }
)
STORE = st.lists(THREAD, min_size=1, max_size=3)
"""What `fill` writes: threads, each with metadata, messages and runs."""


def fill(store: BaseStore, threads: list[dict[str, Any]], seed: int = 0) -> None:
    """Write an assistant and ``threads`` (as `STORE` draws them) into a store."""
    rng = random.Random(seed)
    assistant = store.create_assistant(
        {
            "name": "Ünïcode ✓",
            "description": "d" * 300,
            "instructions": "be brief",
            "model": "gpt-4o-mini",
            "temperature": 0.25,
            "top_p": 0.5,
        },
        {"team": "a", **encode_fields(CODECS, {"text": "x" * 200}, SPAN)},
    )
    store.create_assistant({"model": "m"}, {})
    for t, spec in enumerate(threads):
        metadata = {
            **spec["free"],
            **spec["typed"],
            "assistant_id": assistant.id,
        }
        thread = store.create_thread(metadata)
        batch = [
            NewMessage(
                role=role_of(message),
                payload=to_payload(message),
                id=f"caller-{t}-{i}" if i % 2 else None,
                created_at=rng.randrange(1_500_000_000, 1_700_000_000),
                metadata={"n": str(i)} if i % 3 == 0 else {},
            )
            for i, message in enumerate(spec["messages"])
        ]
        if batch:
            store.add_messages(thread.id, batch)
        for r in range(spec["runs"]):
            _run(store, thread.id, assistant.id, f"run_{t}_{r}_{seed}", r)


def _run(
    store: BaseStore, thread_id: str, assistant_id: str, run_id: str, n: int
) -> None:
    question: LCBaseMessage = HumanMessage(f"question {n} ☃")
    start = store.begin_run(
        thread_id,
        owner=run_id,
        ttl=30,
        run=NewRun(id=run_id, metadata={"attempt": str(n)}),
        messages=[NewMessage(role="user", payload=to_payload(question))],
    )
    assert start is not None
    asked = start.appended[-1].id
    reply: LCBaseMessage = AIMessage(f"answer {n}")
    store.finish_run(
        thread_id,
        owner=run_id,
        run_id=run_id,
        update=RunUpdate(
            status="completed" if n % 2 == 0 else "failed",
            usage=RunUsage(prompt_tokens=10, completion_tokens=n, total_tokens=10 + n),
        ),
        messages=[
            NewMessage(
                role="assistant",
                payload=to_payload(reply),
                run_id=run_id,
                assistant_id=assistant_id,
                reply_to=asked,
            )
        ],
        thread_patch=MetadataPatch(set={"hwm": asked}),
    )


def snapshot(store: BaseStore) -> dict[str, Any]:
    """Everything a store holds, as plain data in the store's order."""
    assistants = [
        a.model_dump() for a in store.list_assistants(order="asc", limit=10_000)
    ]
    threads = []
    for thread in store.list_threads(ThreadQuery(order="asc", limit=10_000)):
        threads.append(
            {
                **thread.model_dump(),
                "usage": store.get_thread_usage(thread.id).model_dump(),
                "runs": [
                    r.model_dump()
                    for r in store.list_runs(thread.id, order="asc", limit=10_000)
                ],
                "messages": [m.model_dump() for m in store.list_messages(thread.id)],
            }
        )
    return {"assistants": assistants, "threads": threads}
