"""FakeChatServer, exercised with the real openai SDK and the real ChatOpenAI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from langchain_core.messages import AIMessageChunk, HumanMessage, SystemMessage
from pydantic import ValidationError

from langchain_retro.testing import (
    FakeChatServer,
    RecordedRequest,
    ScriptedReply,
    ScriptedToolCall,
)

ADD_CALL = {"name": "add", "args": {"a": 1, "b": "a fairly long string argument"}}


@pytest.fixture
def server() -> Iterator[FakeChatServer]:
    with FakeChatServer() as fake:
        yield fake


def _post_raw(server: FakeChatServer, path: str, data: bytes) -> tuple[int, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{server.port}{path}",
        data=data,
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, json.loads(exc.read())


def _sum_chunks(chunks: list[AIMessageChunk]) -> AIMessageChunk:
    total = chunks[0]
    for chunk in chunks[1:]:
        total = total + chunk
    return total


# -- replies -------------------------------------------------------------------


def test_invoke_echoes_last_user_message_with_usage(server: FakeChatServer) -> None:
    reply = server.chat_model().invoke("hello there")

    assert reply.content == "echo: hello there"
    assert reply.usage_metadata is not None
    assert reply.usage_metadata["input_tokens"] == 2
    assert reply.usage_metadata["output_tokens"] == 3
    assert reply.usage_metadata["total_tokens"] == 5
    assert reply.response_metadata["finish_reason"] == "stop"
    assert reply.response_metadata["model_name"] == "fake-model"


def test_sdk_sees_openai_shaped_completion(server: FakeChatServer) -> None:
    with server.openai_client() as client:
        completion = client.chat.completions.create(
            model="some-model", messages=[{"role": "user", "content": "ping"}]
        )

    assert completion.object == "chat.completion"
    assert completion.id.startswith("chatcmpl-")
    assert completion.model == "some-model"
    assert completion.system_fingerprint == "fp_fake"
    choice = completion.choices[0]
    assert choice.finish_reason == "stop"
    assert choice.message.role == "assistant"
    assert choice.message.content == "echo: ping"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == 1
    assert completion.usage.total_tokens == 3


def test_echo_joins_text_parts_and_is_deterministic(server: FakeChatServer) -> None:
    model = server.chat_model()
    message = HumanMessage(
        content=[
            {"type": "text", "text": "first part"},
            {"type": "image_url", "image_url": {"url": "data:image/png;base64,AA=="}},
            {"type": "text", "text": "second"},
        ]
    )

    first = model.invoke([message])
    second = model.invoke([message])

    assert first.content == "echo: first part second"
    assert second.content == first.content
    assert second.usage_metadata == first.usage_metadata


def test_queued_replies_are_fifo_then_default() -> None:
    def default(request: RecordedRequest) -> str:
        return f"default for {request.last_user_text}"

    with FakeChatServer(replies=["one"], default=default) as server:
        server.enqueue("two", ScriptedReply(content="three"))
        model = server.chat_model()
        answers = [model.invoke(f"q{i}").content for i in range(4)]

    assert answers == ["one", "two", "three", "default for q3"]


def test_finish_reason_can_be_scripted(server: FakeChatServer) -> None:
    server.enqueue(ScriptedReply(content="cut", finish_reason="length"))

    reply = server.chat_model().invoke("hi")

    assert reply.response_metadata["finish_reason"] == "length"


# -- streaming -----------------------------------------------------------------


def test_stream_yields_word_chunks_that_sum_to_the_reply(
    server: FakeChatServer,
) -> None:
    server.enqueue("one two three four")

    chunks = list(server.chat_model().stream("count"))

    texts = [chunk.content for chunk in chunks if chunk.content]
    assert texts == ["one ", "two ", "three ", "four"]
    total = _sum_chunks(chunks)
    assert total.content == "one two three four"
    assert total.usage_metadata is not None
    assert total.usage_metadata["input_tokens"] == 1
    assert total.usage_metadata["output_tokens"] == 4
    assert total.response_metadata["finish_reason"] == "stop"
    assert server.requests[0].stream is True
    assert server.requests[0].include_usage is True


async def test_astream_yields_chunks_with_usage(server: FakeChatServer) -> None:
    async with server.achat_model() as model:
        chunks = [chunk async for chunk in model.astream("alpha beta")]

    assert sum(1 for chunk in chunks if chunk.content) == 3
    total = _sum_chunks(chunks)
    assert total.content == "echo: alpha beta"
    assert total.usage_metadata is not None
    assert total.usage_metadata["total_tokens"] == 2 + 3


def test_stream_without_include_usage_has_no_usage_chunk(
    server: FakeChatServer,
) -> None:
    with server.openai_client() as client:
        stream = client.chat.completions.create(
            model="fake-model",
            messages=[{"role": "user", "content": "a b"}],
            stream=True,
        )
        chunks = list(stream)

    assert all(chunk.usage is None for chunk in chunks)
    assert all(chunk.object == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert chunks[-1].choices[0].finish_reason == "stop"
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks)
    assert text == "echo: a b"


def test_per_chunk_delay_spreads_the_stream(server: FakeChatServer) -> None:
    server.set_delay(0, per_chunk=0.02)
    server.enqueue("a b c")

    started = time.perf_counter()
    chunks = list(server.chat_model().stream("x"))
    elapsed = time.perf_counter() - started

    assert _sum_chunks(chunks).content == "a b c"
    # 1 role + 3 words + finish + usage + [DONE] = 6 delays after the first.
    assert elapsed >= 6 * 0.02


def test_abandoned_stream_leaves_server_serving(server: FakeChatServer) -> None:
    server.set_delay(0, per_chunk=0.01)
    model = server.chat_model()
    server.enqueue(" ".join(f"w{i}" for i in range(50)))

    for _chunk in model.stream("long"):
        break
    server.set_delay(0)

    assert model.invoke("after").content == "echo: after"
    assert len(server.requests) == 2


def test_drop_connections_cuts_a_stream_mid_answer(server: FakeChatServer) -> None:
    server.set_delay(0, per_chunk=0.05)
    server.enqueue(" ".join(f"w{i}" for i in range(20)))
    client = server.openai_client(max_retries=0)
    received: list[Any] = []

    def read() -> None:
        for chunk in client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "x"}], stream=True
        ):
            received.append(chunk)
            if len(received) == 2:
                server.drop_connections()

    with pytest.raises(openai.APIConnectionError):
        read()
    assert len(received) == 2  # the rest of the 20 words never came
    server.set_delay(0)
    assert server.chat_model().invoke("after").content == "echo: after"


def test_achat_model_survives_a_new_event_loop_per_run(
    server: FakeChatServer,
) -> None:
    async def ask(text: str) -> object:
        async with server.achat_model() as model:
            reply = await model.ainvoke(text)
        return reply.content

    # Each asyncio.run() closes its loop, as pytest-asyncio does between tests.
    answers = [asyncio.run(ask("one")), asyncio.run(ask("two"))]

    assert answers == ["echo: one", "echo: two"]


# -- tool calls ----------------------------------------------------------------


def test_tool_calls_parse_into_ai_message(server: FakeChatServer) -> None:
    server.enqueue(
        ScriptedReply(
            tool_calls=[ADD_CALL, ScriptedToolCall(name="noop", id="call_fixed")]
        )
    )

    reply = server.chat_model().invoke("add please")

    assert reply.content == ""
    assert [call["name"] for call in reply.tool_calls] == ["add", "noop"]
    assert reply.tool_calls[0]["args"] == ADD_CALL["args"]
    assert reply.tool_calls[0]["id"]
    assert reply.tool_calls[1]["id"] == "call_fixed"
    assert reply.tool_calls[1]["args"] == {}
    assert reply.response_metadata["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("use_async", [False, True])
async def test_streamed_tool_calls_merge(
    server: FakeChatServer, *, use_async: bool
) -> None:
    server.enqueue(ScriptedReply(content="Let me add.", tool_calls=[ADD_CALL]))

    if use_async:
        async with server.achat_model() as model:
            chunks = [chunk async for chunk in model.astream("add")]
    else:
        chunks = list(server.chat_model().stream("add"))

    # The arguments arrive in several pieces and must still merge.
    assert sum(1 for chunk in chunks if chunk.tool_call_chunks) > 2
    total = _sum_chunks(chunks)
    assert total.content == "Let me add."
    assert len(total.tool_calls) == 1
    assert total.tool_calls[0]["name"] == "add"
    assert total.tool_calls[0]["args"] == ADD_CALL["args"]
    assert total.response_metadata["finish_reason"] == "tool_calls"


def test_tool_call_ids_are_deterministic(server: FakeChatServer) -> None:
    server.enqueue(ScriptedReply(tool_calls=[ADD_CALL]))
    server.enqueue(ScriptedReply(tool_calls=[ADD_CALL]))
    model = server.chat_model()

    first, second = model.invoke("a"), model.invoke("b")

    assert first.tool_calls[0]["id"] == second.tool_calls[0]["id"]


def test_tools_sent_by_bind_tools_are_recorded(server: FakeChatServer) -> None:
    def add(a: int, b: int) -> int:
        """Add two integers."""
        return a + b

    server.chat_model().bind_tools([add], tool_choice="add").invoke("1+2")

    recorded = server.requests[0]
    assert [tool["function"]["name"] for tool in recorded.tools] == ["add"]
    assert recorded.tool_choice == {"type": "function", "function": {"name": "add"}}


# -- recording -------------------------------------------------------------------


def test_records_exact_model_temperature_and_messages(
    server: FakeChatServer,
) -> None:
    model = server.chat_model(model="my-model", temperature=0.25, top_p=0.5)

    model.invoke([SystemMessage(content="Be brief."), HumanMessage(content="Hi")])

    [recorded] = server.requests
    assert recorded.method == "POST"
    assert recorded.path == "/v1/chat/completions"
    assert recorded.model == "my-model"
    assert recorded.temperature == 0.25
    assert recorded.top_p == 0.5
    assert recorded.stream is False
    assert recorded.system_prompt == "Be brief."
    assert recorded.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Hi"},
    ]


def test_authorization_header_is_redacted(server: FakeChatServer) -> None:
    with server.openai_client(api_key="sk-secret-value") as client:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )

    recorded = server.requests[0]
    assert recorded.headers["authorization"] == "<redacted>"
    assert "sk-secret-value" not in recorded.model_dump_json()
    assert recorded.headers["content-type"] == "application/json"


def test_concurrent_requests_are_all_recorded(server: FakeChatServer) -> None:
    model = server.chat_model()
    results: dict[int, str] = {}

    def ask(number: int) -> None:
        results[number] = str(model.invoke(f"n{number}").content)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert results == {i: f"echo: n{i}" for i in range(16)}
    assert sorted(r.last_user_text for r in server.requests) == sorted(
        f"n{i}" for i in range(16)
    )


def test_reset_forgets_everything(server: FakeChatServer) -> None:
    model = server.chat_model()
    model.invoke("first")
    server.enqueue("queued")
    server.fail_next(500)
    server.set_delay(5)

    server.reset()

    assert server.requests == []
    assert model.invoke("second").content == "echo: second"
    assert len(server.requests) == 1


# -- failures ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "error_class"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (404, openai.NotFoundError),
        (429, openai.RateLimitError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
def test_fail_next_maps_to_sdk_errors(
    server: FakeChatServer, status: int, error_class: type[openai.APIStatusError]
) -> None:
    server.fail_next(status, message="scripted failure")

    with pytest.raises(error_class) as caught:
        server.chat_model().invoke("hi")

    assert caught.value.status_code == status
    assert isinstance(caught.value.body, dict)
    assert caught.value.body["message"] == "scripted failure"
    assert set(caught.value.body) == {"message", "type", "param", "code"}
    assert caught.value.request_id is not None
    assert server.requests[0].last_user_text == "hi"


def test_failures_come_before_queue_and_count(server: FakeChatServer) -> None:
    server.enqueue("queued")
    server.fail_next(500, count=2)
    model = server.chat_model()

    for _ in range(2):
        with pytest.raises(openai.InternalServerError):
            model.invoke("hi")

    assert model.invoke("hi").content == "queued"
    assert len(server.requests) == 3


def test_retrying_client_gets_the_reply_after_a_failure(
    server: FakeChatServer,
) -> None:
    server.fail_next(500, retry_after=0.001)
    server.enqueue("after retry")

    # retry-after-ms spares the SDK's half-second default back-off.
    reply = server.chat_model(max_retries=1).invoke("hi")

    assert reply.content == "after retry"
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == [
        "0",
        "1",
    ]


def test_retry_after_is_sent_as_retry_after_ms(server: FakeChatServer) -> None:
    server.fail_next(429, retry_after=0.25)

    with pytest.raises(openai.RateLimitError) as caught:
        server.chat_model().invoke("hi")

    assert caught.value.response.headers["retry-after-ms"] == "250"


async def test_streaming_failure_raises_before_any_chunk(
    server: FakeChatServer,
) -> None:
    server.fail_next(429)
    received: list[AIMessageChunk] = []

    async def consume() -> None:
        async with server.achat_model() as model:
            async for chunk in model.astream("hi"):
                received.append(chunk)

    with pytest.raises(openai.RateLimitError):
        await consume()

    assert received == []
    assert server.requests[0].stream is True


def test_scripted_error_reply_from_queue(server: FakeChatServer) -> None:
    server.enqueue(ScriptedReply(status=400, error_message="bad", error_code="x1"))

    with pytest.raises(openai.BadRequestError) as caught:
        server.chat_model().invoke("hi")

    assert caught.value.code == "x1"
    assert caught.value.type == "invalid_request_error"


def test_broken_default_answers_500() -> None:
    def default(request: RecordedRequest) -> str:
        raise KeyError(request.last_user_text)

    with FakeChatServer(default=default) as server:
        with pytest.raises(openai.InternalServerError, match="default reply failed"):
            server.chat_model().invoke("boom")
        assert len(server.requests) == 1


def test_scripted_reply_rejects_non_error_status() -> None:
    with pytest.raises(ValidationError):
        ScriptedReply(status=200)


# -- latency -------------------------------------------------------------------


def test_delay_beyond_client_timeout_raises_sdk_timeout(
    server: FakeChatServer,
) -> None:
    server.set_delay(1.0)

    with pytest.raises(openai.APITimeoutError):
        server.chat_model(timeout=0.1).invoke("slow")

    server.set_delay(0)
    assert server.chat_model().invoke("fast").content == "echo: fast"
    assert len(server.requests) == 2


async def test_async_client_times_out_too(server: FakeChatServer) -> None:
    server.set_delay(1.0)

    async with server.async_openai_client(timeout=0.1) as client:
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "hi"}]
            )


# -- other endpoints -------------------------------------------------------------


def test_unknown_path_is_404_with_openai_error(server: FakeChatServer) -> None:
    status, body = _post_raw(server, "/v1/nope", b"{}")

    assert status == 404
    assert body["error"]["type"] == "invalid_request_error"
    assert "/v1/nope" in body["error"]["message"]
    assert server.requests == []


def test_malformed_json_is_400(server: FakeChatServer) -> None:
    status, body = _post_raw(server, "/v1/chat/completions", b"{not json")

    assert status == 400
    assert set(body["error"]) == {"message", "type", "param", "code"}


def test_missing_messages_is_400_and_recorded(server: FakeChatServer) -> None:
    status, body = _post_raw(server, "/v1/chat/completions", b'{"model": "m"}')

    assert status == 400
    assert body["error"]["param"] == "messages"
    assert server.requests[0].model == "m"


def test_models_endpoint_lists_fake_models() -> None:
    with (
        FakeChatServer(models=["fake-model", "other"]) as server,
        server.openai_client() as client,
    ):
        ids = [model.id for model in client.models.list()]
        other = client.models.retrieve("other")
        with pytest.raises(openai.NotFoundError):
            client.models.retrieve("missing")

    assert ids == ["fake-model", "other"]
    assert other.id == "other"


# -- lifecycle -------------------------------------------------------------------


def test_lifecycle_errors_and_idempotent_stop() -> None:
    server = FakeChatServer()
    with pytest.raises(RuntimeError, match="not running"):
        _ = server.base_url

    server.start()
    try:
        assert server.base_url == f"http://127.0.0.1:{server.port}/v1"
        with pytest.raises(RuntimeError, match="already running"):
            server.start()
    finally:
        server.stop()
    server.stop()

    with pytest.raises(RuntimeError, match="not running"):
        _ = server.port


def test_stop_is_fast_with_open_keep_alive_connections() -> None:
    server = FakeChatServer().start()
    with server.openai_client() as client:
        client.chat.completions.create(
            model="fake-model", messages=[{"role": "user", "content": "hi"}]
        )
        started = time.perf_counter()
        server.stop()
        elapsed = time.perf_counter() - started

        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(
                model="fake-model", messages=[{"role": "user", "content": "hi"}]
            )

    assert elapsed < 1.0


def test_stop_interrupts_a_delayed_answer() -> None:
    server = FakeChatServer().start()
    server.set_delay(30)
    errors: list[BaseException] = []

    def ask() -> None:
        try:
            server.chat_model(timeout=10).invoke("hi")
        except openai.APIError as exc:
            errors.append(exc)

    thread = threading.Thread(target=ask)
    thread.start()
    while not server.requests:
        time.sleep(0.01)
    started = time.perf_counter()
    server.stop()
    thread.join(timeout=5)

    assert time.perf_counter() - started < 2
    assert not thread.is_alive()
    assert len(errors) == 1
