"""Runs over HTTP, polled: the openai SDK's helpers against ``langchain-retro serve``.

One server process for the module (SQLite); its upstream model is a
`FakeChatServer` in this process, whose recorded requests show what each run sent.
"""

from __future__ import annotations

import concurrent.futures
import json
import time
from typing import Any

import httpx2
import openai
import pytest
from _server import KEY_A, KEY_B, SDK_DEPRECATIONS, Served

from langchain_retro import ChatCompletionThread, SQLiteStore, ThreadRunner
from langchain_retro.testing import FakeChatServer, ScriptedReply, ScriptedToolCall

pytestmark = SDK_DEPRECATIONS

WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "The weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


def test_the_old_quickstart(client: openai.OpenAI, fake: FakeChatServer) -> None:
    # OpenAI's Assistants quickstart, less its code_interpreter tool (refused here).
    assistant = client.beta.assistants.create(
        name="Math Tutor",
        instructions=(
            "You are a personal math tutor. Write and run code to answer math "
            "questions."
        ),
        model="gpt-4o",
    )
    thread = client.beta.threads.create()
    message = client.beta.threads.messages.create(
        thread_id=thread.id,
        role="user",
        content="I need to solve the equation `3x + 11 = 14`. Can you help me?",
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        instructions=(
            "Please address the user as Jane Doe. The user has a premium account."
        ),
    )
    assert run.status == "completed"
    messages = client.beta.threads.messages.list(thread_id=thread.id)
    reply, question = messages.data
    assert question.id == message.id
    assert reply.role == "assistant"
    assert reply.run_id == run.id
    assert reply.content[0].text.value == (  # type: ignore[union-attr]
        "echo: I need to solve the equation `3x + 11 = 14`. Can you help me?"
    )
    (sent,) = fake.requests
    assert sent.model == "gpt-4o"
    assert sent.system_prompt == (
        "Please address the user as Jane Doe. The user has a premium account."
    )
    assert run.instructions.startswith("Please address the user as Jane Doe.")
    assert run.model == "gpt-4o"
    assert run.usage is not None
    assert run.usage.total_tokens > 0


def test_a_run_with_nothing_new_answers_the_last_question_again(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    # As OpenAI did: a run on a thread whose newest message is a reply replies again.
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    runs = [
        client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        for _ in range(2)
    ]
    assert [run.status for run in runs] == ["completed", "completed"]
    first, second = fake.requests
    assert [(m["role"], m["content"]) for m in second.messages] == [
        *[(m["role"], m["content"]) for m in first.messages],
        ("assistant", "echo: hi"),
    ]
    listed = client.beta.threads.messages.list(thread.id, order="asc").data
    assert [(m.role, m.run_id) for m in listed] == [
        ("user", None),
        ("assistant", runs[0].id),
        ("assistant", runs[1].id),
    ]
    # An empty thread has nothing to answer: the run fails and says so.
    empty = client.beta.threads.create()
    failed = client.beta.threads.runs.create_and_poll(
        thread_id=empty.id, assistant_id=assistant.id
    )
    assert failed.status == "failed"
    assert failed.last_error is not None
    assert "no message waiting" in failed.last_error.message
    assert len(fake.requests) == 2


def test_runs_use_the_assistants_settings_and_the_runs_overrides(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(
        model="base-model", temperature=0.2, top_p=0.9, instructions="Be brief."
    )
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "one"}])
    first = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    second = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id,
        assistant_id=assistant.id,
        model="other-model",
        temperature=1.5,
        additional_instructions="Answer in French.",
        additional_messages=[{"role": "user", "content": "two"}],
        max_completion_tokens=300,
        metadata={"attempt": "2"},
    )
    assert (first.status, second.status) == ("completed", "completed")
    one, two = fake.requests
    assert (one.model, one.temperature, one.top_p) == ("base-model", 0.2, 0.9)
    assert one.system_prompt == "Be brief."
    assert (two.model, two.temperature, two.top_p) == ("other-model", 1.5, 0.9)
    assert two.max_tokens == 300
    assert [m["content"] for m in two.messages if m["role"] == "system"] == [
        "Be brief.",
        "Answer in French.",
    ]
    assert two.last_user_text == "two"
    assert (second.model, second.temperature, second.metadata) == (
        "other-model",
        1.5,
        {"attempt": "2"},
    )
    runs = client.beta.threads.runs.list(thread.id)
    assert [r.id for r in runs.data] == [second.id, first.id]
    changed = client.beta.threads.runs.update(
        second.id, thread_id=thread.id, metadata={"reviewed": "yes"}
    )
    assert changed.metadata == {"reviewed": "yes"}
    assert client.beta.threads.runs.retrieve(
        second.id, thread_id=thread.id
    ).metadata == {"reviewed": "yes"}


def test_function_tools_end_in_requires_action_and_tool_outputs_continue(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])  # type: ignore[list-item]
    thread = client.beta.threads.create(
        messages=[{"role": "user", "content": "Weather in Paris?"}]
    )
    fake.enqueue(
        ScriptedReply(
            tool_calls=[
                ScriptedToolCall(name="get_weather", args={"city": "Paris"}, id="c1")
            ]
        ),
        "It is sunny in Paris.",
    )
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "requires_action"
    assert run.required_action is not None
    (call,) = run.required_action.submit_tool_outputs.tool_calls
    assert (call.id, call.function.name) == ("c1", "get_weather")
    assert json.loads(call.function.arguments) == {"city": "Paris"}
    assert fake.requests[0].tools[0]["function"]["name"] == "get_weather"

    with pytest.raises(openai.BadRequestError, match="already has an active run"):
        client.beta.threads.runs.create(thread_id=thread.id, assistant_id=assistant.id)
    with pytest.raises(openai.BadRequestError, match=f"while a run {run.id} is"):
        client.beta.threads.messages.create(thread.id, role="user", content="and?")
    with pytest.raises(openai.BadRequestError, match="c1"):
        client.beta.threads.runs.submit_tool_outputs(
            run.id, thread_id=thread.id, tool_outputs=[{"tool_call_id": "c9"}]
        )
    done = client.beta.threads.runs.submit_tool_outputs_and_poll(
        run_id=run.id,
        thread_id=thread.id,
        tool_outputs=[{"tool_call_id": "c1", "output": "sunny, 24C"}],
    )
    assert done.status == "completed"
    assert done.id == run.id
    sent = fake.requests[1].messages
    assert sent[-1] == {
        "role": "tool",
        "content": "sunny, 24C",
        "tool_call_id": "c1",
    }
    listed = client.beta.threads.messages.list(thread.id, order="asc").data
    texts = [m.content[0].text.value for m in listed]  # type: ignore[union-attr]
    assert texts == ["Weather in Paris?", "It is sunny in Paris."]

    steps = client.beta.threads.runs.steps.list(
        run.id, thread_id=thread.id, order="asc"
    )
    assert [s.type for s in steps.data] == ["tool_calls", "message_creation"]
    assert all(s.status == "completed" for s in steps.data)
    tool_step = client.beta.threads.runs.steps.retrieve(
        steps.data[0].id, thread_id=thread.id, run_id=run.id
    )
    assert tool_step.step_details.type == "tool_calls"
    (called,) = tool_step.step_details.tool_calls
    assert called.function.output == "sunny, 24C"  # type: ignore[union-attr]
    created = steps.data[1].step_details
    assert created.type == "message_creation"
    assert created.message_creation.message_id == listed[1].id


def test_create_and_run_poll(client: openai.OpenAI, fake: FakeChatServer) -> None:
    assistant = client.beta.assistants.create(model="m", instructions="Hi.")
    run = client.beta.threads.create_and_run_poll(
        assistant_id=assistant.id,
        thread={
            "messages": [{"role": "user", "content": "Hello there"}],
            "metadata": {"source": "poll"},
        },
    )
    assert run.status == "completed"
    assert client.beta.threads.retrieve(run.thread_id).metadata == {"source": "poll"}
    (reply, _) = client.beta.threads.messages.list(run.thread_id).data
    assert reply.content[0].text.value == "echo: Hello there"  # type: ignore[union-attr]
    assert fake.requests[0].system_prompt == "Hi."


def test_a_busy_thread_is_a_400_naming_the_active_run(
    api: Served, client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "slow"}])
    fake.set_delay(1.5)
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "in_progress"
    with api.http(KEY_A) as http:
        polled = http.get(f"/v1/threads/{thread.id}/runs/{run.id}")
        second = http.post(
            f"/v1/threads/{thread.id}/runs", json={"assistant_id": assistant.id}
        )
    # A GET that is not a polling helper's answers at once, the run still going.
    assert polled.json()["status"] == "in_progress"
    assert int(polled.headers["openai-poll-after-ms"]) > 0
    assert second.status_code == 400
    error = second.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert run.id in error["message"]
    # Nor does a message go in while the run is active, as OpenAI answered.
    with pytest.raises(openai.BadRequestError) as refused:
        client.beta.threads.messages.create(thread.id, role="user", content="more")
    assert refused.value.message.endswith(
        f"Can't add messages to {thread.id} while a run {run.id} is active."
    )
    assert refused.value.type == "invalid_request_error"
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed"
    assert len(client.beta.threads.runs.list(thread.id).data) == 1
    with api.http(KEY_A) as http:
        ended = http.get(f"/v1/threads/{thread.id}/runs/{run.id}")
    assert "openai-poll-after-ms" not in ended.headers  # nothing left to poll for
    texts = [
        m.content[0].text.value  # type: ignore[union-attr]
        for m in client.beta.threads.messages.list(thread.id, order="asc")
    ]
    assert texts == ["slow", "echo: slow"]
    # Once it ended, the thread takes messages again.
    client.beta.threads.messages.create(thread.id, role="user", content="more")


def test_cancel_stops_a_run_in_flight(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant, thread = _assistant_and_thread(client)
    fake.set_delay(10)
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id
    )
    time.sleep(0.3)
    started = time.monotonic()
    cancelling = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelling.status in ("cancelling", "cancelled")
    done = client.beta.threads.runs.poll(
        run.id, thread_id=thread.id, poll_interval_ms=50
    )
    assert done.status == "cancelled"
    assert time.monotonic() - started < 5
    assert done.cancelled_at is not None
    assert [m.role for m in client.beta.threads.messages.list(thread.id)] == ["user"]
    with pytest.raises(openai.BadRequestError, match="cancelled"):
        client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    fake.set_delay(0)
    again = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert again.status == "completed"


def test_cancel_a_run_waiting_for_tool_outputs(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m", tools=[WEATHER])  # type: ignore[list-item]
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "?"}])
    fake.enqueue(ScriptedReply(tool_calls=[ScriptedToolCall(name="get_weather")]))
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "requires_action"
    cancelled = client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    assert cancelled.status == "cancelled"
    steps = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    assert [(s.type, s.status) for s in steps] == [("tool_calls", "cancelled")]


def test_a_failed_model_call_fails_the_run_with_last_error(
    client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    fake.fail_next(400, message="the upstream refused")
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "failed"
    assert run.last_error is not None
    assert run.last_error.code == "server_error"
    assert "the upstream refused" in run.last_error.message
    assert run.failed_at is not None


def test_run_errors_change_nothing(api: Served, client: openai.OpenAI) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    cases = [
        ({"assistant_id": "asst_nope"}, 404, None),
        (
            {"assistant_id": assistant.id, "tools": [{"type": "code_interpreter"}]},
            400,
            "tools[0]",
        ),
        ({"assistant_id": assistant.id, "metadata": {"k" * 65: "v"}}, 400, "metadata"),
        ({"assistant_id": assistant.id, "max_prompt_tokens": 10}, 400, None),
        ({"assistant_id": assistant.id, "temperature": 3}, 400, "temperature"),
    ]
    with api.http(KEY_A) as http:
        for body, status, param in cases:
            response = http.post(f"/v1/threads/{thread.id}/runs", json=body)
            assert response.status_code == status, (body, response.text)
            if param is not None:
                assert response.json()["error"]["param"] == param
        assert http.get(f"/v1/threads/{thread.id}/runs/run_nope").status_code == 404
        unknown = http.post(
            f"/v1/threads/{thread.id}/runs/run_nope/cancel", json={}
        ).status_code
        assert unknown == 404
    assert client.beta.threads.runs.list(thread.id).data == []
    assert len(client.beta.threads.messages.list(thread.id).data) == 1


FILE_SEARCH_CONTENT = "step_details.tool_calls[*].file_search.results[*].content"


def test_include_is_refused_by_name_with_nothing_stored(
    client: openai.OpenAI,
) -> None:
    # include[] asks for file_search results: a 400 naming it, never ignored.
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "x"}])
    with pytest.raises(openai.BadRequestError) as refused:
        client.beta.threads.runs.create(
            thread.id,
            assistant_id=assistant.id,
            additional_messages=[{"role": "user", "content": "lost"}],
            include=[FILE_SEARCH_CONTENT],
        )
    assert refused.value.param == "include[]"
    assert "file_search" in refused.value.message
    assert client.beta.threads.runs.list(thread.id).data == []
    assert len(client.beta.threads.messages.list(thread.id).data) == 1
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "completed"
    (step,) = client.beta.threads.runs.steps.list(run.id, thread_id=thread.id).data
    for ask in (
        lambda: client.beta.threads.runs.steps.list(
            run.id, thread_id=thread.id, include=[FILE_SEARCH_CONTENT]
        ),
        lambda: client.beta.threads.runs.steps.retrieve(
            step.id, thread_id=thread.id, run_id=run.id, include=[FILE_SEARCH_CONTENT]
        ),
    ):
        with pytest.raises(openai.BadRequestError) as refused:
            ask()
        assert refused.value.param == "include[]"


async def test_async_client_runs_and_keys_do_not_mix(
    api: Served, fake: FakeChatServer
) -> None:
    alpha = api.async_client(KEY_A)
    bravo = api.async_client(KEY_B)
    assistant = await alpha.beta.assistants.create(model="m")
    thread = await alpha.beta.threads.create(
        messages=[{"role": "user", "content": "async hello"}]
    )
    run = await alpha.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "completed"
    with pytest.raises(openai.NotFoundError):
        await bravo.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        await bravo.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    with pytest.raises(openai.NotFoundError):
        await bravo.beta.threads.runs.cancel(run.id, thread_id=thread.id)
    steps = await alpha.beta.threads.runs.steps.list(run.id, thread_id=thread.id)
    assert [s.type for s in steps.data] == ["message_creation"]
    await alpha.close()
    await bravo.close()


def test_messages_racing_a_run_land_before_it_or_are_refused(
    api: Served, client: openai.OpenAI, fake: FakeChatServer
) -> None:
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "m"}])
    fake.set_delay(1.0)
    path = f"/v1/threads/{thread.id}"

    def send(index: int) -> tuple[str, int, str]:
        with api.http(KEY_A) as http:
            if index == 4:
                body = {"assistant_id": assistant.id}
                answer = http.post(f"{path}/runs", json=body)
                return "run", answer.status_code, answer.json().get("id", "")
            body = {"role": "user", "content": f"m{index}"}
            answer = http.post(f"{path}/messages", json=body)
            return f"m{index}", answer.status_code, answer.text

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(send, range(12)))
    ((_, status, run_id),) = [a for a in answers if a[0] == "run"]
    assert status == 200
    accepted = {name for name, status, _ in answers if name != "run" and status == 200}
    for name, status, text in answers:
        if name != "run" and status != 200:
            assert status == 400, text
            assert f"while a run {run_id} is active" in text
    done = client.beta.threads.runs.poll(run_id, thread_id=thread.id)
    assert done.status == "completed"
    texts = [
        m.content[0].text.value  # type: ignore[union-attr]
        for m in client.beta.threads.messages.list(thread.id, order="asc", limit=100)
    ]
    # Each message taken is in the run's input, or after its reply: none mid-run.
    (sent,) = fake.requests
    context = {m["content"] for m in sent.messages if m["role"] == "user"}
    reply = texts.index(f"echo: {sent.last_user_text}")
    for name in accepted:
        assert (name in context) == (texts.index(name) < reply), (name, texts)


def _assistant_and_thread(
    client: openai.OpenAI,
) -> tuple[openai.types.beta.Assistant, openai.types.beta.Thread]:
    """An assistant, and a thread holding one user message."""
    assistant = client.beta.assistants.create(model="m")
    thread = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    return assistant, thread


def _paused_run(
    client: openai.OpenAI, fake: FakeChatServer, thread_id: str, assistant_id: str
) -> openai.types.beta.threads.Run:
    """A run made through ``create_and_poll`` that waits for a tool's output."""
    fake.enqueue(
        ScriptedReply(
            tool_calls=[ScriptedToolCall(name="get_weather", args={}, id="c1")]
        )
    )
    paused = client.beta.threads.runs.create_and_poll(
        thread_id=thread_id,
        assistant_id=assistant_id,
        tools=[WEATHER],  # type: ignore[list-item]
    )
    assert paused.status == "requires_action"
    return paused


def _watched(
    api: Served, **options: Any
) -> tuple[openai.OpenAI, list[httpx2.Response]]:
    """A client of the first key, and every response it receives."""
    seen: list[httpx2.Response] = []
    return api.client(KEY_A, seen=seen, **options), seen


def _run_gets(seen: list[httpx2.Response], run_id: str) -> list[httpx2.Response]:
    return [
        r for r in seen if r.request.method == "GET" and r.url.path.endswith(run_id)
    ]


def test_a_polling_helper_is_answered_once_the_run_stops(
    api: Served, fake: FakeChatServer
) -> None:
    client, seen = _watched(api)
    assistant, thread = _assistant_and_thread(client)
    fake.set_delay(0.8)
    # The server says to wait 200 ms between polls; the helper's one GET waits for
    # the run instead, and answers as soon as it stopped.
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "completed"
    (get,) = _run_gets(seen, run.id)
    assert get.request.headers["x-stainless-poll-helper"] == "true"
    assert "openai-poll-after-ms" not in get.headers
    # Answered as the run's last write left it: what a plain GET reads back.
    assert run == client.beta.threads.runs.retrieve(run.id, thread_id=thread.id)
    assert run.usage is not None
    assert run.completed_at is not None
    # A pause for tool outputs is a stop too.
    fake.set_delay(0.5)
    paused = _paused_run(client, fake, thread.id, assistant.id)
    assert len(_run_gets(seen, paused.id)) == 1
    assert paused == client.beta.threads.runs.retrieve(paused.id, thread_id=thread.id)


def test_a_polling_helper_is_answered_within_half_its_read_timeout(
    api: Served, fake: FakeChatServer
) -> None:
    # No retries: a GET that outlived the client's timeout would raise.
    client, seen = _watched(api, timeout=1.0)
    assistant, thread = _assistant_and_thread(client)
    fake.set_delay(1.8)
    run = client.beta.threads.runs.create_and_poll(
        thread_id=thread.id, assistant_id=assistant.id
    )
    assert run.status == "completed"
    *going, last = _run_gets(seen, run.id)
    assert going  # each wait ended within 0.5 s, the run still going
    for response in going:
        assert response.request.headers["x-stainless-read-timeout"] == "1.0"
        assert response.json()["status"] == "in_progress"
        assert response.headers["openai-poll-after-ms"] == "0"  # ask again at once
    assert last.json()["status"] == "completed"


def test_a_polling_helper_waits_only_for_a_run_its_key_sees_on_that_thread(
    api: Served, fake: FakeChatServer
) -> None:
    # A run of this worker is waited for without being read first: only a request
    # of the owner that started it, naming its thread, may wait for it.
    client, _ = _watched(api)
    assistant, thread = _assistant_and_thread(client)
    other = client.beta.threads.create()
    fake.set_delay(1.5)
    run = client.beta.threads.runs.create(
        thread_id=thread.id, assistant_id=assistant.id
    )
    refusals = (
        (KEY_B, thread.id, f"No thread found with id '{thread.id}'."),
        (KEY_A, other.id, f"No run found with id '{run.id}'."),
    )
    for key, thread_id, message in refusals:
        with api.http(key) as http:
            started = time.monotonic()
            answer = http.get(
                f"/v1/threads/{thread_id}/runs/{run.id}",
                headers={"X-Stainless-Poll-Helper": "true"},
            )
            assert time.monotonic() - started < 1.0  # refused, not waited for
        assert answer.status_code == 404, (key, thread_id)
        assert answer.json()["error"]["message"] == message
    done = client.beta.threads.runs.poll(run.id, thread_id=thread.id)
    assert done.status == "completed"


def test_a_polling_helper_waits_for_a_run_of_another_process(
    api: Served, fake: FakeChatServer
) -> None:
    client, seen = _watched(api)
    assistant, thread = _assistant_and_thread(client)
    fake.set_delay(0.8)
    with SQLiteStore(api.db) as store, concurrent.futures.ThreadPoolExecutor() as pool:
        ChatCompletionThread.retrieve(store, thread.id).update(
            store, assistant_id=assistant.id
        )
        runner = ThreadRunner(store=store, llm=fake.chat_model())
        reply = pool.submit(
            runner.invoke, None, {"configurable": {"thread_id": thread.id}}
        )
        deadline = time.monotonic() + 10
        while not (runs := client.beta.threads.runs.list(thread.id).data):
            assert time.monotonic() < deadline, "the run never appeared"
            time.sleep(0.01)
        assert runs[0].status == "in_progress"
        done = client.beta.threads.runs.poll(runs[0].id, thread_id=thread.id)
        assert done.status == "completed"
        assert reply.result().content == "echo: hi"
    assert len(_run_gets(seen, done.id)) == 1


def test_a_run_request_names_what_it_cannot_see_in_order(
    api: Served, client: openai.OpenAI, fake: FakeChatServer
) -> None:
    # The reads go side by side; the answer is the first failure, in this order:
    # the thread, then the assistant, then the run, then the thread's active run.
    assistant = client.beta.assistants.create(model="m")
    mine = client.beta.threads.create(messages=[{"role": "user", "content": "hi"}])
    run = client.beta.threads.runs.create_and_poll(
        thread_id=mine.id, assistant_id=assistant.id
    )
    theirs = api.client(KEY_B).beta.threads.create()

    def error(method: str, path: str, body: dict[str, str] | None = None) -> str:
        with api.http(KEY_A) as http:
            response = http.request(method, path, json=body)
        assert response.status_code == 404, response.text
        return str(response.json()["error"]["message"])

    nobody = {"assistant_id": "asst_nope"}
    assert theirs.id in error("POST", f"/v1/threads/{theirs.id}/runs", nobody)
    assert "asst_nope" in error("POST", f"/v1/threads/{mine.id}/runs", nobody)
    assert theirs.id in error("GET", f"/v1/threads/{theirs.id}/runs/{run.id}")
    assert "run_nope" in error("GET", f"/v1/threads/{mine.id}/runs/run_nope")
    assert "thread_nope" in error("GET", "/v1/threads/thread_nope/runs/run_nope")
    # A thread waiting for tool outputs refuses another run before it is pointed
    # at the other assistant.
    other = client.beta.assistants.create(model="m")
    paused = _paused_run(client, fake, mine.id, assistant.id)
    with pytest.raises(openai.BadRequestError, match=paused.id):
        client.beta.threads.runs.create(thread_id=mine.id, assistant_id=other.id)
    with SQLiteStore(api.db) as store:
        assert ChatCompletionThread.retrieve(store, mine.id).assistant_id == (
            assistant.id
        )
