"""Several workers and dead ones: one active run per thread, held in the store.

``--workers 2`` on PostgreSQL: a second run on a busy thread is refused (400 naming
the active run) whichever worker takes the request, and a cancel reaches the run
from any worker. A server killed mid-run leaves its run to expire with its lease;
the thread is then usable again.
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
def test_a_busy_thread_across_two_workers_on_postgres(
    fake: FakeChatServer, tmp_path: Path
) -> None:
    url, schema = postgres_url(), unique_schema()
    try:
        with served(
            fake, tmp_path, workers=2, postgres=(url, schema), lease_ttl=1.5
        ) as api:
            client = api.client(KEY_A)
            workers = set()
            for _ in range(12):
                with api.http(None) as http:
                    workers.add(http.get("/healthz").json()["worker"])
            assistant = client.beta.assistants.create(model="m")
            thread = client.beta.threads.create(
                messages=[{"role": "user", "content": "slow"}]
            )
            fake.set_delay(20)
            run = client.beta.threads.runs.create(
                thread_id=thread.id, assistant_id=assistant.id
            )

            def second(_: int) -> tuple[int, str]:
                with api.http(KEY_A) as http:
                    response = http.post(
                        f"/v1/threads/{thread.id}/runs",
                        json={"assistant_id": assistant.id},
                    )
                    return response.status_code, response.text

            with concurrent.futures.ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(second, range(8)))
            assert all(status == 400 for status, _ in answers), answers
            assert all(run.id in text for _, text in answers)

            started = time.monotonic()
            client.beta.threads.runs.cancel(run.id, thread_id=thread.id)
            done = client.beta.threads.runs.poll(
                run.id, thread_id=thread.id, poll_interval_ms=50
            )
            assert done.status == "cancelled"
            assert time.monotonic() - started < 5
            fake.set_delay(0)
            again = client.beta.threads.runs.create_and_poll(
                thread_id=thread.id, assistant_id=assistant.id
            )
            assert again.status == "completed"
            assert api.checked() == []
            # Both workers answered: the refusals above did not rely on one process.
            assert len(workers) == 2, workers
    finally:
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
