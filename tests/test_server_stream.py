"""Streamed runs: server-sent events in OpenAI's order, read by the SDK's helpers.

One server process for the module (SQLite). The raw streams are also read event by
event and each event checked against the spec's ``AssistantStreamEvent``.
"""

from __future__ import annotations

import json
from typing import Any

import openai
import pytest
from _server import KEY_A, SDK_DEPRECATIONS, Served, check_event
from openai import AssistantEventHandler, AsyncAssistantEventHandler
from openai.types.beta import AssistantStreamEvent

from langchain_retro.testing import FakeChatServer, ScriptedReply, ScriptedToolCall

pytestmark = SDK_DEPRECATIONS

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}},
    },
}

TEXT_RUN = [
    "thread.run.created",
    "thread.run.queued",
    "thread.run.in_progress",
    "thread.run.step.created",
    "thread.run.step.in_progress",
    "thread.message.created",
    "thread.message.in_progress",
    "thread.message.delta",
    "thread.message.completed",
    "thread.run.step.completed",
    "thread.run.completed",
]


def _collapsed(names: list[str]) -> list[str]:
    """Event names with runs of deltas as one."""
    out: list[str] = []
    for name in names:
        if not (out and name == out[-1] and name.endswith(".delta")):
            out.append(name)
    return out


class Recorder(AssistantEventHandler):
    """Records every event and the text as it streams."""

    def __init__(self) -> None:
        super().__init__()
        self.names: list[str] = []
        self.text = ""

    def on_event(self, event: AssistantStreamEvent) -> None:
        self.names.append(event.event)

    def on_text_delta(self, delta: Any, snapshot: Any) -> None:
        self.text += delta.value


def test_runs_stream_with_an_event_handler(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m", instructions="Be kind.")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "tell me a short story"}]
    )
    handler = Recorder()
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=handler
    ) as stream:
        stream.until_done()
        final = stream.get_final_messages()
        run = stream.current_run
    assert _collapsed(handler.names) == TEXT_RUN
    assert handler.names.count("thread.message.delta") > 1  # word by word
    assert handler.text == "echo: tell me a short story"
    assert run is not None
    assert run.status == "completed"
    (message,) = final
    stored = client.beta.threads.messages.list(thread.id).data[0]
    assert stored.id == message.id
    assert stored.content[0].text.value == handler.text  # type: ignore[union-attr]
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert steps[0].step_details.message_creation.message_id == message.id  # type: ignore[union-attr]
    assert fake.requests[0].stream is True


def test_function_tools_through_streams(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])  # type: ignore[list-item]
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Weather in Oslo?"}]
    )
    fake.enqueue(
        ScriptedReply(
            tool_calls=[
                ScriptedToolCall(name="get_weather", args={"city": "Oslo"}, id="w1")
            ]
        ),
        "Snowing in Oslo.",
    )
    inner = Recorder()

    class Tools(Recorder):
        def on_event(self, event: AssistantStreamEvent) -> None:
            super().on_event(event)
            if event.event == "thread.run.requires_action":
                action = event.data.required_action
                assert action is not None
                outputs = [
                    {"tool_call_id": call.id, "output": "snow, -3C"}
                    for call in action.submit_tool_outputs.tool_calls
                ]
                with client.beta.threads.runs.submit_tool_outputs_stream(
                    thread_id=event.data.thread_id,
                    run_id=event.data.id,
                    tool_outputs=outputs,  # type: ignore[arg-type]
                    event_handler=inner,
                ) as stream:
                    stream.until_done()

    tools = Tools()
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=tools
    ) as stream:
        stream.until_done()
    assert _collapsed(tools.names) == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.created",
        "thread.run.step.in_progress",
        "thread.run.step.delta",
        "thread.run.requires_action",
    ]
    assert _collapsed(inner.names) == [
        "thread.run.queued",
        "thread.run.in_progress",
        "thread.run.step.completed",
        *TEXT_RUN[3:],
    ]
    assert inner.text == "Snowing in Oslo."
    assert fake.requests[1].messages[-1]["content"] == "snow, -3C"
    run = client.beta.threads.runs.list(thread.id).data[0]
    assert run.status == "completed"
    steps = client.beta.threads.runs.steps.list(
        run.id, thread_id=thread.id, order="asc"
    ).data
    assert [(s.type, s.status) for s in steps] == [
        ("tool_calls", "completed"),
        ("message_creation", "completed"),
    ]


def _events(api: Served, path: str, body: dict[str, Any]) -> list[tuple[str, Any]]:
    """A raw stream's events, each checked against the spec."""
    events: list[tuple[str, Any]] = []
    with api.http(KEY_A) as http, http.stream("POST", path, json=body) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        name = None
        for line in response.iter_lines():
            if line.startswith("event: "):
                name = line.removeprefix("event: ")
            elif line.startswith("data: ") and name is not None:
                text = line.removeprefix("data: ")
                data = text if name == "done" else json.loads(text)
                events.append((name, data))
    for name, data in events:
        assert check_event(name, data) == [], name
    return events


def test_create_and_run_streams_the_thread_first_and_done_last(
    api: Served, client: openai.OpenAI
) -> None:
    assistant = client.beta.assistants.create(model="m")
    events = _events(
        api,
        "/v1/threads/runs",
        {
            "assistant_id": assistant.id,
            "thread": {"messages": [{"role": "user", "content": "hi there"}]},
            "stream": True,
        },
    )
    names = _collapsed([name for name, _ in events])
    assert names == ["thread.created", *TEXT_RUN, "done"]
    assert events[-1][1] == "[DONE]"
    thread = events[0][1]
    run = events[-2][1]
    assert run["thread_id"] == thread["id"]
    assert run["status"] == "completed"
    created = next(data for name, data in events if name == "thread.message.created")
    completed = next(
        data for name, data in events if name == "thread.message.completed"
    )
    assert created["id"] == completed["id"]
    assert created["status"] == "in_progress"
    assert completed["content"][0]["text"]["value"] == "echo: hi there"


def test_a_model_failure_ends_the_stream_with_run_failed(
    api: Served, client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    fake.fail_next(400, message="upstream says no")
    events = _events(
        api,
        f"/v1/threads/{thread.id}/runs",
        {"assistant_id": assistant.id, "stream": True},
    )
    names = [name for name, _ in events]
    assert names[:3] == [
        "thread.run.created",
        "thread.run.queued",
        "thread.run.in_progress",
    ]
    assert names[-2:] == ["thread.run.failed", "done"]
    failed = events[-2][1]
    assert failed["last_error"]["code"] == "server_error"
    assert "upstream says no" in failed["last_error"]["message"]
    assert client.beta.threads.runs.retrieve(
        failed["id"], thread_id=thread.id
    ).status == ("failed")


def test_a_cancel_mid_stream_ends_it_cancelled(
    api: Served, client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "one two three four five six seven"}]
    )
    fake.set_delay(0, per_chunk=0.4)
    names: list[str] = []
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id
    ) as stream:
        for event in stream:
            names.append(event.event)
            if event.event == "thread.message.delta" and names.count(event.event) == 1:
                client.beta.threads.runs.cancel(run_id(stream), thread_id=thread.id)
    assert names[-1] == "thread.run.cancelled"
    assert "thread.run.step.cancelled" in names
    assert [m.role for m in client.beta.threads.messages.list(thread.id)] == ["user"]


def run_id(stream: Any) -> str:
    run = stream.current_run
    assert run is not None
    return str(run.id)


async def test_async_stream(api: Served, fake: FakeChatServer) -> None:
    client = api.async_client(KEY_A)
    assistant = await client.beta.assistants.create(model="m")
    thread = await client.beta.threads.create(
        messages=[{"role": "user", "content": "async stream"}]
    )
    names: list[str] = []

    class Handler(AsyncAssistantEventHandler):
        async def on_event(self, event: AssistantStreamEvent) -> None:
            names.append(event.event)

    async with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id, event_handler=Handler()
    ) as stream:
        await stream.until_done()
        (message,) = await stream.get_final_messages()
    assert _collapsed(names) == TEXT_RUN
    assert message.content[0].text.value == "echo: async stream"  # type: ignore[union-attr]
    await client.close()


def test_an_upstream_cut_mid_stream_ends_it_with_run_failed(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "one two three four five six"}]
    )
    fake.set_delay(0, per_chunk=0.3)
    names: list[str] = []
    failed: Any = None
    with client.beta.threads.runs.stream(
        thread_id=thread.id, assistant_id=assistant.id
    ) as stream:
        for event in stream:
            names.append(event.event)
            if event.event == "thread.message.delta" and names.count(event.event) == 1:
                # The upstream model's connection drops after its first words.
                fake.drop_connections()
            if event.event == "thread.run.failed":
                failed = event.data
    assert names[-3:] == [
        "thread.message.delta",
        "thread.run.step.failed",
        "thread.run.failed",
    ]
    assert failed.last_error.code == "server_error"
    assert failed.last_error.message
    run = client.beta.threads.runs.retrieve(failed.id, thread_id=thread.id)
    assert (run.status, run.last_error) == ("failed", failed.last_error)
    assert [m.role for m in client.beta.threads.messages.list(thread.id)] == ["user"]


async def test_events_already_waiting_go_out_in_one_write() -> None:
    # The body writer sends what the queue holds at once; a later event (the
    # model's next delta, say) is its own write, and the end closes the body.
    from langchain_retro.server.events import RunEvents, sse  # noqa: PLC0415
    from langchain_retro.server.routes.runs import _stream  # noqa: PLC0415

    events = RunEvents()
    starting = ("thread.run.created", "thread.run.queued", "thread.run.in_progress")
    for name in starting:
        events.emit(name, {"id": "run_1"})
    body = _stream(events)
    first = await anext(body)
    assert first == "".join(sse(name, {"id": "run_1"}) for name in starting)
    events.emit("thread.message.delta", {"id": "msg_1"})
    assert await anext(body) == sse("thread.message.delta", {"id": "msg_1"})
    events.emit("thread.run.completed", {"id": "run_1"})
    events.queue.put_nowait(None)
    assert await anext(body) == sse("thread.run.completed", {"id": "run_1"})
    with pytest.raises(StopAsyncIteration):
        await anext(body)
