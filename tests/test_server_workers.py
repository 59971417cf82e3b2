"""Several workers and dead ones: one active run per thread, held in the store.

Two servers on one PostgreSQL schema, one running a thread's runs, the other with
``--workers 2``: the other refuses a second run (400 naming the active run)
whichever of its workers takes the request, and a message; cancels the run; and,
once the first is killed mid-run, reads that run expired with its lease and runs
the thread on. A server killed mid-run on SQLite leaves its run to expire too; a
stopping server lets its streams finish.
"""

from __future__ import annotations

import concurrent.futures
import signal
import time
from pathlib import Path

import openai
import pytest
from _server import KEY_A, SDK_DEPRECATIONS, Served, served, unique_schema
from conftest import _drop_schema, postgres_url

from langchain_retro.testing import FakeChatServer

pytestmark = SDK_DEPRECATIONS


@pytest.mark.postgres
def test_one_thread_across_workers_and_servers_on_postgres(
    fake: FakeChatServer, tmp_path: Path
) -> None:
    url, schema = postgres_url(), unique_schema()
    # The runs' server, killed below, and another with two workers.
    host = Served(fake, tmp_path, postgres=(url, schema), lease_ttl=1.0)
    other = Served(fake, tmp_path, postgres=(url, schema), lease_ttl=1.0, workers=2)
    try:
        # Started together: most of their time is Python starting up.
        host.launch()
        other.launch()
        runs, two = host.ready().client(KEY_A), other.ready().client(KEY_A)
        # Both workers of the other server answer below: no refusal relies on one.
        # The second may still be starting when the first answers, and the kernel
        # hands connections to either as it likes: ask until both have answered.
        workers = set()
        deadline = time.monotonic() + 30
        while len(workers) < 2 and time.monotonic() < deadline:
            with other.http(None) as http:
                workers.add(http.get("/healthz").json()["worker"])
        assert len(workers) == 2, workers
        assistant = two.beta.assistants.create(model="m")
        thread = two.beta.threads.create(
            messages=[{"role": "user", "content": "hello"}]
        )
        fake.set_delay(30)
        run = runs.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id
        )

        def second(_: int) -> tuple[int, str]:
            with other.http(KEY_A) as http:
                response = http.post(
                    f"/v1/threads/{thread.id}/runs",
                    json={"assistant_id": assistant.id},
                )
                return response.status_code, response.text

        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(second, range(8)))
        assert all(status == 400 for status, _ in answers), answers
        assert all(run.id in text for _, text in answers)
        with pytest.raises(openai.BadRequestError, match=f"while a run {run.id} is"):
            two.beta.threads.messages.create(thread.id, role="user", content="more")
        # A cancel through the other server reaches the run at its next renewal.
        started = time.monotonic()
        two.beta.threads.runs.cancel(run.id, thread_id=thread.id)
        done = two.beta.threads.runs.poll(
            run.id, thread_id=thread.id, poll_interval_ms=50
        )
        assert done.status == "cancelled"
        assert time.monotonic() - started < 5

        # The runs' server killed mid-run: its run expires with its lease, and
        # the other server runs the thread on.
        doomed = runs.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id
        )
        time.sleep(0.3)
        host.kill()
        deadline = time.monotonic() + 10
        status = "in_progress"
        while status != "expired" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = two.beta.threads.runs.retrieve(
                doomed.id, thread_id=thread.id
            ).status
        assert status == "expired"
        fake.set_delay(0)
        two.beta.threads.messages.create(thread.id, role="user", content="again")
        again = two.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert again.status == "completed"
        reply = two.beta.threads.messages.list(thread.id).data[0]
        assert reply.content[0].text.value == "echo: again"  # type: ignore[union-attr]
        assert host.checked() == []
        assert other.checked() == []
    finally:
        host.kill()
        other.stop()
        for server in (host, other):
            server.close_clients()
        _drop_schema(url, schema)


def test_a_run_whose_worker_died_expires_and_frees_the_thread(
    fake: FakeChatServer, tmp_path: Path
) -> None:
    first = Served(fake, tmp_path, lease_ttl=1.0).start()
    try:
        client = first.client(KEY_A)
        assistant = client.beta.assistants.create(model="m")
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": "never answered"}]
        )
        fake.set_delay(30)
        run = client.beta.threads.runs.create(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert run.status == "in_progress"
        time.sleep(0.3)
    finally:
        first.kill()
        first.close_clients()
    fake.set_delay(0)
    with served(fake, tmp_path, lease_ttl=1.0, db=first.db) as second:
        client = second.client(KEY_A)
        deadline = time.monotonic() + 10
        status = "in_progress"
        while status != "expired" and time.monotonic() < deadline:
            time.sleep(0.2)
            status = client.beta.threads.runs.retrieve(
                run.id, thread_id=thread.id
            ).status
        assert status == "expired"
        again = client.beta.threads.runs.create_and_poll(
            thread_id=thread.id, assistant_id=assistant.id
        )
        assert again.status == "completed"
        messages = client.beta.threads.messages.list(thread.id).data
        assert messages[0].content[0].text.value == "echo: never answered"  # type: ignore[union-attr]
        with pytest.raises(openai.BadRequestError, match="expired"):
            client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
        assert second.checked() == []


def test_a_stopping_server_lets_its_streams_finish(
    fake: FakeChatServer, tmp_path: Path
) -> None:
    api = Served(fake, tmp_path).start()
    try:
        client = api.client(KEY_A)
        assistant = client.beta.assistants.create(model="m")
        thread = client.beta.threads.create(
            messages=[{"role": "user", "content": "a b c d e f g h"}]
        )
        fake.set_delay(0, per_chunk=0.15)
        names: list[str] = []
        text = ""
        with client.beta.threads.runs.stream(
            thread_id=thread.id, assistant_id=assistant.id
        ) as stream:
            for event in stream:
                names.append(event.event)
                if event.event == "thread.message.delta":
                    if text == "":
                        api.stop_async()
                    text += event.data.delta.content[0].text.value  # type: ignore[index, union-attr]
        assert names[-1] == "thread.run.completed"
        assert text == "echo: a b c d e f g h"
        # uvicorn ends by the signal it was stopped with, after shutting down.
        assert api.wait() in (0, -signal.SIGTERM)
    finally:
        api.kill()
        api.close_clients()
