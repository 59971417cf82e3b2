"""``runs list|show|cancel`` and the token usage ``threads show`` prints."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from _helpers import Caller
from _run_records import ai, begin, completed_run, finish, required, tool
from langchain_core.messages import HumanMessage
from test_cli import Cli, make_assistant

from langchain_retro import SQLiteStore
from langchain_retro.stores.base import IncompleteDetails, LastError

DB = "langchain-retro.db"
SYNC = Caller("sync")
CALLS = [("call_add", "add", {"a": 2, "b": 3})]


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_DB", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


@pytest.fixture
def thread_id(cli: Cli) -> str:
    assistant_id = make_assistant(cli)
    return str(cli.json("threads", "create", "--assistant", assistant_id)["id"])


async def tool_run(thread_id: str, run_id: str) -> None:
    """A run that called ``add`` in process, got 5, and answered; 25 + 9 tokens."""
    with SQLiteStore(DB) as store:
        start = await begin(SYNC, store, thread_id, run_id, HumanMessage("2+3?"))
        asked = ai(calls=CALLS, tokens=(10, 4))
        await finish(SYNC, store, start.run, "in_progress", asked)
        await finish(SYNC, store, start.run, "in_progress", tool("call_add", "5"))
        await finish(SYNC, store, start.run, "completed", ai("5", tokens=(15, 5)))


async def waiting_run(thread_id: str, run_id: str) -> None:
    """A run waiting in requires_action for the result of ``add``."""
    with SQLiteStore(DB) as store:
        start = await begin(SYNC, store, thread_id, run_id, HumanMessage("2+3?"))
        await finish(
            SYNC,
            store,
            start.run,
            "requires_action",
            ai(calls=CALLS, tokens=(10, 4)),
            required_action=required(*CALLS),
        )


async def test_runs_list_shows_each_run_newest_first(cli: Cli, thread_id: str) -> None:
    await tool_run(thread_id, "run_tools")
    await waiting_run(thread_id, "run_waiting")
    code, out, err = cli("runs", "list", thread_id)
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "CREATED", "(UTC)", "STATUS", "MODEL", "TOKENS"]
    assert lines[1].split()[0] == "run_waiting"
    assert lines[1].split()[3:] == ["requires_action", "gpt-4o-mini", "14"]
    assert lines[2].split()[0] == "run_tools"
    assert lines[2].split()[3:] == ["completed", "gpt-4o-mini", "34"]
    assert "more:" not in out

    listed = cli.json("runs", "list", thread_id, "--order", "asc")
    assert listed["object"] == "list"
    assert [r["id"] for r in listed["data"]] == ["run_tools", "run_waiting"]
    assert listed["data"][0]["object"] == "thread.run"
    assert listed["data"][0]["usage"] == {
        "prompt_tokens": 25,
        "completion_tokens": 9,
        "total_tokens": 34,
    }
    assert (listed["first_id"], listed["last_id"], listed["has_more"]) == (
        "run_tools",
        "run_waiting",
        False,
    )


async def test_runs_list_pages_with_a_hint_to_paste(cli: Cli, thread_id: str) -> None:
    for i in range(3):
        with SQLiteStore(DB) as store:
            await completed_run(SYNC, store, thread_id, f"run_{i}")
    code, out, _ = cli("runs", "list", thread_id, "--order", "asc", "--limit", "2")
    assert code == 0
    (more,) = re.findall(r"^\(more: (.*)\)$", out, re.M)
    words = shlex.split(more)
    assert words[1:] == [
        "runs",
        "list",
        thread_id,
        "--order",
        "asc",
        "--limit",
        "2",
        "--after",
        "run_1",
    ]
    code, out, _ = cli(*words[1:])
    assert code == 0
    assert re.findall(r"^run_\d", out, re.M) == ["run_2"]
    assert "more:" not in out


def test_runs_list_of_a_thread_without_runs(cli: Cli, thread_id: str) -> None:
    code, out, _ = cli("runs", "list", thread_id)
    assert (code, out) == (0, f"no runs on thread {thread_id}\n")
    assert cli.json("runs", "list", thread_id)["data"] == []
    code, out, err = cli("runs", "list", "thread_nope")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "thread_nope" in err


async def test_runs_show_prints_the_run_and_its_steps(cli: Cli, thread_id: str) -> None:
    await tool_run(thread_id, "run_tools")
    code, out, err = cli("runs", "show", thread_id, "run_tools")
    assert (code, err) == (0, "")
    fields = dict(
        line.split(None, 1) for line in out.split("\n\n")[0].splitlines() if line
    )
    assert fields["run"] == "run_tools"
    assert fields["thread"] == thread_id
    assert fields["status"] == "completed"
    assert fields["model"] == "gpt-4o-mini"
    assert fields["usage"] == "total 34 (prompt 25, completion 9)"
    assert fields["last_error"] == "-"
    assert fields["incomplete_details"] == "-"
    assert fields["required_action"] == "-"
    assert "completed" in fields
    steps = out.split("\n\n")[1]
    assert steps.splitlines()[0] == "2 step(s), in order:"
    assert re.search(r"step_\w+\s+tool_calls\s+completed", steps)
    assert 'call_add  add({"a": 2, "b": 3}) -> 5' in steps
    assert re.search(r"step_\w+\s+message_creation\s+completed\s+message msg_", steps)

    shown = cli.json("runs", "show", thread_id, "run_tools")
    assert (shown["id"], shown["object"], shown["status"]) == (
        "run_tools",
        "thread.run",
        "completed",
    )
    assert [s["type"] for s in shown["steps"]] == ["tool_calls", "message_creation"]
    (called,) = shown["steps"][0]["step_details"]["tool_calls"]
    assert called["function"] == {
        "name": "add",
        "arguments": '{"a": 2, "b": 3}',
        "output": "5",
    }
    assert shown["steps"][1]["usage"]["total_tokens"] == 20


async def test_runs_show_a_waiting_run_names_what_it_waits_for(
    cli: Cli, thread_id: str
) -> None:
    await waiting_run(thread_id, "run_waiting")
    code, out, _ = cli("runs", "show", thread_id, "run_waiting")
    assert code == 0
    assert re.search(r"^status\s+requires_action$", out, re.M)
    assert re.search(r"^required_action\s+submit_tool_outputs for:$", out, re.M)
    assert re.search(r"^  call_add  add\(", out, re.M)
    assert re.search(r"tool_calls\s+in_progress", out)
    assert "(no output)" in out


async def test_runs_show_a_failed_and_an_incomplete_run(
    cli: Cli, thread_id: str
) -> None:
    with SQLiteStore(DB) as store:
        start = await begin(SYNC, store, thread_id, "run_failed", HumanMessage("x"))
        error = LastError(code="rate_limit_exceeded", message="slow down")
        await finish(SYNC, store, start.run, "failed", last_error=error)
        start = await begin(SYNC, store, thread_id, "run_short", HumanMessage("y"))
        await finish(
            SYNC,
            store,
            start.run,
            "incomplete",
            incomplete_details=IncompleteDetails(reason="max_completion_tokens"),
        )
    _, out, _ = cli("runs", "show", thread_id, "run_failed")
    assert re.search(r"^last_error\s+rate_limit_exceeded: slow down$", out, re.M)
    assert re.search(r"^failed\s+\d{4}-", out, re.M)
    assert re.search(r"^steps\s+-$", out, re.M)
    _, out, _ = cli("runs", "show", thread_id, "run_short")
    assert re.search(r"^incomplete_details\s+max_completion_tokens$", out, re.M)
    shown = cli.json("runs", "show", thread_id, "run_failed")
    assert shown["last_error"] == {
        "code": "rate_limit_exceeded",
        "message": "slow down",
    }
    assert shown["steps"] == []


def test_runs_show_an_unknown_run_is_one_line(cli: Cli, thread_id: str) -> None:
    code, out, err = cli("runs", "show", thread_id, "run_nope")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "run_nope" in err


async def test_runs_cancel(cli: Cli, thread_id: str) -> None:
    await waiting_run(thread_id, "run_waiting")
    code, out, _ = cli("runs", "cancel", thread_id, "run_waiting")
    assert (code, out) == (0, "cancelled run run_waiting\n")
    assert cli.json("runs", "show", thread_id, "run_waiting")["status"] == "cancelled"

    code, out, err = cli("runs", "cancel", thread_id, "run_waiting")
    assert (code, out) == (1, "")
    assert err.count("\n") == 1
    assert "already cancelled" in err

    with SQLiteStore(DB) as store:
        await begin(SYNC, store, thread_id, "run_busy", HumanMessage("go"))
    cancelled = cli.json("runs", "cancel", thread_id, "run_busy")
    assert (cancelled["id"], cancelled["status"]) == ("run_busy", "cancelling")
    code, out, _ = cli("runs", "cancel", thread_id, "run_busy")
    assert code == 0
    assert out.startswith("cancelling run run_busy")


async def test_threads_show_prints_the_threads_token_usage(
    cli: Cli, thread_id: str
) -> None:
    code, out, _ = cli("threads", "show", thread_id)
    assert code == 0
    assert re.search(
        r"^tokens \(all runs\)\s+total 0 \(prompt 0, completion 0\)$", out, re.M
    )
    assert cli.json("threads", "show", thread_id)["usage"] == {
        "prompt_tokens": 0,
        "completion_tokens": 0,
        "total_tokens": 0,
    }
    await tool_run(thread_id, "run_1")
    await waiting_run(thread_id, "run_2")
    _, out, _ = cli("threads", "show", thread_id)
    assert re.search(r"total 48 \(prompt 35, completion 13\)$", out, re.M)
    shown = cli.json("threads", "show", thread_id)
    assert shown["usage"] == {
        "prompt_tokens": 35,
        "completion_tokens": 13,
        "total_tokens": 48,
    }
