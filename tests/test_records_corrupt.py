"""Stored rows that no longer rebuild raise `CorruptDataError`, naming the object.

Rows are damaged through the store's own methods, as another tool writing the same
database would: metadata patched with values the typed fields cannot decode, native
fields out of range, payloads that are not messages. Every reader raises
`CorruptDataError` naming the object (and its thread), never a raw error, and every
other object stays readable.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from langchain_core.messages import HumanMessage

from langchain_retro import (
    AssistantThreadChatMessageHistory,
    BaseAssistant,
    BaseMessage,
    BaseThread,
    CorruptDataError,
    ThreadMessage,
)
from langchain_retro._metadata import MetadataPatch
from langchain_retro.stores.base import BaseStore, NewMessage

if TYPE_CHECKING:
    from _helpers import Caller as Call

pytest_plugins = ["_helpers"]


class Ticket(BaseThread):
    priority: int = 0


class Agent(BaseAssistant):
    max_tokens: int | None = None


class Rated(BaseMessage):
    stars: int = 0


BAD_VALUES = ["not json", '"text"', "[1, 2]", '{"a": 1}', "1e999999", ""]


@pytest.mark.parametrize("value", BAD_VALUES)
async def test_thread_metadata_that_no_longer_decodes(
    store: BaseStore, call: Call, value: str
) -> None:
    bad = await call(Ticket, "create", store, priority=1)
    good = await call(Ticket, "create", store, priority=1)
    await call(store, "update_thread", bad.id, MetadataPatch(set={"priority": value}))
    with pytest.raises(CorruptDataError) as caught:
        await call(Ticket, "retrieve", store, bad.id)
    assert caught.value.object_id == bad.id
    assert bad.id in str(caught.value)
    assert "priority" in str(caught.value)
    assert isinstance(caught.value.__cause__, ValueError)
    with pytest.raises(CorruptDataError, match=bad.id):
        await call(Ticket, "list", store)
    with pytest.raises(CorruptDataError, match=bad.id):
        await call(BaseThread, "retrieve", store, bad.id)
    assert await call(Ticket, "retrieve", store, good.id) == good
    assert (await call(Ticket, "list", store, limit=1)).data == [good]  # newest


async def test_assistant_fields_that_no_longer_validate(
    store: BaseStore, call: Call
) -> None:
    bad = await call(Agent, "create", store, model="m", max_tokens=5)
    good = await call(Agent, "create", store, model="m")
    await call(
        store, "update_assistant", bad.id, {}, MetadataPatch(set={"max_tokens": "x"})
    )
    with pytest.raises(CorruptDataError) as caught:
        await call(Agent, "retrieve", store, bad.id)
    assert (caught.value.object_id, caught.value.thread_id) == (bad.id, None)
    with pytest.raises(CorruptDataError, match=bad.id):
        await call(Agent, "list", store)
    assert await call(Agent, "retrieve", store, good.id) == good

    await call(store, "update_assistant", good.id, {"temperature": 7.0})
    with pytest.raises(CorruptDataError, match="temperature"):
        await call(Agent, "retrieve", store, good.id)


async def test_message_metadata_that_no_longer_decodes(
    store: BaseStore, call: Call
) -> None:
    thread = await call(BaseThread, "create", store)
    bad = await call(
        Rated, "create", store, thread_id=thread.id, message=HumanMessage("a"), stars=2
    )
    await call(
        store, "update_message", thread.id, bad.id, MetadataPatch(set={"stars": "[x"})
    )
    with pytest.raises(CorruptDataError) as caught:
        await call(Rated, "retrieve", store, thread.id, bad.id)
    assert (caught.value.object_id, caught.value.thread_id) == (bad.id, thread.id)
    assert thread.id in str(caught.value)
    with pytest.raises(CorruptDataError, match=bad.id):
        await call(Rated, "list", store, thread.id)
    # The history reads payloads only: the message itself is intact.
    history = AssistantThreadChatMessageHistory(store, thread.id)
    assert [m.content for m in await call.messages(history)] == ["a"]


async def test_one_corrupt_thread_leaves_the_others_readable(
    store: BaseStore, call: Call
) -> None:
    bad = await call(BaseThread, "create", store)
    good = await call(BaseThread, "create", store)
    await call(
        store,
        "add_messages",
        bad.id,
        [NewMessage(role="user", payload='{"type": "human", "content": 1}')],
    )
    await call(
        ThreadMessage, "create", store, thread_id=good.id, message=HumanMessage("ok")
    )
    with pytest.raises(CorruptDataError) as caught:
        await call(ThreadMessage, "list", store, bad.id)
    assert caught.value.thread_id == bad.id
    with pytest.raises(CorruptDataError):
        await call.messages(AssistantThreadChatMessageHistory(store, bad.id))
    page = await call(ThreadMessage, "list", store, good.id)
    assert [m.message.content for m in page.data] == ["ok"]
