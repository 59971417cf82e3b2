"""``chat`` on a thread another run holds: it says so, who and until when, and waits
as long as ``--wait`` says."""

from __future__ import annotations

import io
import sys
import time
from pathlib import Path

import pytest
from test_cli import Cli

from langchain_retro import Assistant, ChatCompletionThread, SQLiteStore
from langchain_retro._cli_chat import busy_line, wait_notice
from langchain_retro.cli import main
from langchain_retro.stores.base import Lease

CRASHED = "run_that_crashed"


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_DB", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def held_thread(ttl: float) -> tuple[str, bool]:
    """A thread whose last run crashed holding its lease for ``ttl`` seconds.

    Returns its id and whether the store reports leases (`get_lease`).
    """
    with SQLiteStore("langchain-retro.db") as store:
        bot = Assistant.create(store, model="gpt-4o-mini")
        thread = ChatCompletionThread.create(store, assistant_id=bot.id)
        assert store.acquire_lease(thread.id, CRASHED, ttl)
        try:
            reports = store.get_lease(thread.id) is not None
        except NotImplementedError:
            reports = False
    return thread.id, reports


def test_chat_says_it_waits_for_a_held_thread_then_answers(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, reports = held_thread(ttl=1.5)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    started = time.monotonic()
    code, out, err = cli("chat", "--thread", thread_id, "--wait", "20", "--offline")
    took = time.monotonic() - started
    assert code == 0, err
    assert f"thread {thread_id} is busy" in out
    assert "waiting up to 20 s" in out
    assert "--wait SECONDS" in out
    if reports:  # stores that report leases name the holder and the expiry
        assert f"run {CRASHED} holds its lease until" in out
    # Announced before the reply, which came once the lease lapsed.
    assert out.index("is busy") < out.index("assistant [offline echo]> echo: hi")
    assert took < 15
    assert "--wait 20" in out  # the resume hint keeps it


def test_chat_still_busy_after_the_wait_says_so_and_stores_nothing(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    thread_id, _ = held_thread(ttl=60)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    started = time.monotonic()
    code, out, err = cli("chat", "--thread", thread_id, "--wait", "0.3", "--offline")
    assert time.monotonic() - started < 10  # not the default 30 s
    assert code == 1
    assert "waiting up to 0.3 s" in out
    assert err == busy_line(thread_id, 0.3) + "\n"
    assert "--wait SECONDS" in err
    assert cli.json("threads", "show", thread_id)["messages"] == []


def test_chat_on_a_free_thread_says_nothing_about_waiting(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    code, out, _ = cli("chat", "--offline")
    assert code == 0
    assert "busy" not in out
    assert "--wait" not in out  # the default is not repeated in hints


def test_wait_notice_names_the_holder_and_when_the_lease_frees() -> None:
    now = 1_800_000_000.0
    lease = Lease(thread_id="thread_1", owner="abc123", expires_at=now + 45)
    notice = wait_notice("thread_1", lease, 30, now)
    assert "run abc123 holds its lease until 08:00:45 UTC (45 s from now" in notice
    assert "waiting up to 30 s" in notice
    assert "expect it still busy (--wait 46 outlasts the lease)" in notice

    assert "expect" not in wait_notice("thread_1", lease, 60, now)
    unknown = wait_notice("thread_1", None, 30, now)
    assert unknown == (
        "thread thread_1 is busy with another run; waiting up to 30 s for it "
        "(--wait SECONDS to change)..."
    )


@pytest.mark.parametrize("value", ["-1", "nan", "inf", "soon"])
def test_wait_must_be_seconds(value: str) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["chat", "--offline", "--wait", value])
    assert exit_info.value.code == 2
