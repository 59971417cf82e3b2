"""The ``langchain-retro`` command, run in-process and as an installed script."""

from __future__ import annotations

import argparse
import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from langchain_retro import Assistant, AssistantThreadChatMessageHistory, SQLiteStore
from langchain_retro.cli import build_parser, main
from langchain_retro.testing import FakeChatServer

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    """The environment for a subprocess: this checkout's package comes first, even
    when the console script was installed from another checkout."""
    return {**os.environ, "PYTHONPATH": str(ROOT)}


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test in its own directory, with no database or credentials from outside."""
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_DB", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


class Cli:
    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> tuple[int, str, str]:
        code = main(list(args))
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str) -> Any:
        code, out, err = self("--json", *args)
        assert code == 0, err
        return json.loads(out)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def make_assistant(cli: Cli, *extra: str) -> str:
    created = cli.json("assistants", "create", "--model", "gpt-4o-mini", *extra)
    return str(created["id"])


# --- assistants -----------------------------------------------------------------------


def test_assistant_create_show_list_delete(cli: Cli, clean_env: Path) -> None:
    code, out, _ = cli(
        "assistants",
        "create",
        "--model",
        "gpt-4o-mini",
        "--name",
        "Helper",
        "--instructions",
        "Be brief.",
        "--temperature",
        "0.2",
        "--top-p",
        "0.9",
        "--metadata",
        "team=support",
        "--metadata",
        "tier=gold",
    )
    assert code == 0
    (assistant_id,) = re.findall(r"asst_\w+", out)
    assert (clean_env / "langchain-retro.db").exists()

    shown = cli.json("assistants", "show", assistant_id)
    assert shown["object"] == "assistant"
    assert shown["model"] == "gpt-4o-mini"
    assert shown["name"] == "Helper"
    assert shown["instructions"] == "Be brief."
    assert shown["temperature"] == 0.2
    assert shown["top_p"] == 0.9
    assert shown["metadata"] == {"team": "support", "tier": "gold"}

    code, out, _ = cli("assistants", "show", assistant_id)
    assert code == 0
    assert "Helper" in out
    assert "team=support" in out

    listed = cli.json("assistants", "list")
    assert [a["id"] for a in listed["data"]] == [assistant_id]
    assert listed["has_more"] is False
    code, out, _ = cli("assistants", "list")
    assert assistant_id in out

    deleted = cli.json("assistants", "delete", assistant_id)
    assert deleted == {
        "id": assistant_id,
        "object": "assistant.deleted",
        "deleted": True,
        "threads_deleted": 0,
    }
    assert cli.json("assistants", "list")["data"] == []


def test_assistant_list_filters_and_pages(cli: Cli) -> None:
    ids = [make_assistant(cli, "--metadata", f"n={i}") for i in range(3)]
    first = cli.json("assistants", "list", "--limit", "2")
    assert [a["id"] for a in first["data"]] == ids[::-1][:2]
    assert first["has_more"] is True
    second = cli.json("assistants", "list", "--limit", "2", "--after", first["last_id"])
    assert [a["id"] for a in second["data"]] == [ids[0]]
    assert second["has_more"] is False
    only = cli.json("assistants", "list", "--metadata", "n=1")
    assert [a["id"] for a in only["data"]] == [ids[1]]

    _, out, _ = cli("assistants", "list", "--limit", "2")
    assert f"--after {ids[1]}" in out


def test_assistant_delete_refuses_keeps_or_deletes_threads(cli: Cli) -> None:
    assistant_id = make_assistant(cli)
    thread_id = cli.json("threads", "create", "--assistant", assistant_id)["id"]

    code, out, err = cli("assistants", "delete", assistant_id)
    assert code == 1
    assert out == ""
    assert err.count("\n") == 1
    assert "--threads delete" in err

    code, out, _ = cli("assistants", "delete", assistant_id, "--threads", "delete")
    assert code == 0
    assert "1 thread" in out
    code, _, err = cli("threads", "show", thread_id)
    assert code == 1

    other = make_assistant(cli)
    kept = cli.json("threads", "create", "--assistant", other)["id"]
    assert (
        cli.json("assistants", "delete", other, "--threads", "keep")["threads_deleted"]
        == 0
    )
    assert cli.json("threads", "show", kept)["assistant_id"] == other


# --- threads --------------------------------------------------------------------------


def test_thread_create_show_list_delete(cli: Cli) -> None:
    assistant_id = make_assistant(cli)
    code, out, _ = cli(
        "threads", "create", "--assistant", assistant_id, "--metadata", "region=eu"
    )
    assert code == 0
    (thread_id,) = re.findall(r"thread_\w+", out)
    override = cli.json(
        "threads", "create", "--assistant", assistant_id, "--model", "llama3.2"
    )
    assert override["chat_completion_model"] == "llama3.2"

    shown = cli.json("threads", "show", thread_id)
    assert shown["object"] == "thread"
    assert shown["assistant_id"] == assistant_id
    assert shown["hwm"] is None
    assert shown["chat_completion_model"] is None
    assert shown["metadata"] == {"region": "eu"}
    assert shown["messages"] == []

    code, out, _ = cli("threads", "show", thread_id)
    assert code == 0
    assert "hwm" in out
    assert "0 (0 pending: after the hwm)" in out

    listed = cli.json("threads", "list")
    assert [t["id"] for t in listed["data"]] == [override["id"], thread_id]
    by_metadata = cli.json("threads", "list", "--metadata", "region=eu")
    assert [t["id"] for t in by_metadata["data"]] == [thread_id]
    code, out, _ = cli("threads", "list")
    assert thread_id in out
    assert "region=eu" in out

    code, out, _ = cli("threads", "delete", thread_id)
    assert code == 0
    assert [t["id"] for t in cli.json("threads", "list")["data"]] == [override["id"]]


def test_thread_list_by_assistant_and_pages(cli: Cli) -> None:
    first, second = make_assistant(cli), make_assistant(cli)
    mine = [cli.json("threads", "create", "--assistant", first)["id"] for _ in range(3)]
    cli.json("threads", "create", "--assistant", second)

    listed = cli.json("threads", "list", "--assistant", first, "--limit", "2")
    assert [t["id"] for t in listed["data"]] == mine[::-1][:2]
    assert listed["has_more"] is True
    rest = cli.json(
        "threads", "list", "--assistant", first, "--after", listed["last_id"]
    )
    assert [t["id"] for t in rest["data"]] == [mine[0]]
    assert rest["has_more"] is False


def test_thread_show_lists_messages_newest_window(cli: Cli) -> None:
    thread_id = cli.json("threads", "create", "--assistant", make_assistant(cli))["id"]
    with SQLiteStore() as store:
        AssistantThreadChatMessageHistory(store, thread_id).add_messages(
            [HumanMessage("one"), AIMessage("two"), HumanMessage("three")]
        )
    shown = cli.json("threads", "show", thread_id, "--limit", "2")
    assert [(m["role"], m["content"]) for m in shown["messages"]] == [
        ("assistant", "two"),
        ("user", "three"),
    ]
    assert shown["has_more_messages"] is True

    code, out, _ = cli("threads", "show", thread_id)
    assert code == 0
    # The history's reply "two" answered "one": only the user's last is pending.
    assert "3 (1 pending: after the hwm)" in out
    assert out.index("one") < out.index("two") < out.index("three")


def test_thread_create_needs_an_existing_assistant(cli: Cli) -> None:
    code, out, err = cli("threads", "create", "--assistant", "asst_missing")
    assert code == 1
    assert out == ""
    assert err == (
        "langchain-retro: error: No assistant with id 'asst_missing' in this store.\n"
    )


# --- options and errors ---------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("threads", "show", "thread_nope"),
        ("threads", "delete", "thread_nope"),
        ("assistants", "show", "asst_nope"),
        ("assistants", "delete", "asst_nope"),
        ("threads", "list", "--after", "thread_nope"),
    ],
)
def test_unknown_id_is_one_line_and_exit_1(cli: Cli, args: tuple[str, ...]) -> None:
    code, out, err = cli(*args)
    assert code == 1
    assert out == ""
    assert err.startswith("langchain-retro: error: No ")
    assert err.count("\n") == 1
    assert "Traceback" not in err


def test_invalid_value_is_one_line_and_exit_1(cli: Cli) -> None:
    code, _, err = cli("assistants", "create", "--model", "m", "--temperature", "5")
    assert code == 1
    assert err.count("\n") == 1
    assert "temperature" in err


@pytest.mark.parametrize(
    "args",
    [
        (),
        ("threads",),
        ("threads", "list", "--metadata", "no-equals-sign"),
        ("threads", "list", "--limit", "0"),
        ("assistants", "delete", "asst_x", "--threads", "maybe"),
    ],
)
def test_usage_errors_exit_2(cli: Cli, args: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2


def test_db_option_env_and_default(
    cli: Cli, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_assistant(cli, "--name", "default")
    assert (clean_env / "langchain-retro.db").exists()

    monkeypatch.setenv("LANGCHAIN_RETRO_DB", str(clean_env / "env.db"))
    make_assistant(cli, "--name", "env")
    # Global options work before or after the command.
    assert [a["name"] for a in cli.json("assistants", "list")["data"]] == ["env"]
    code, out, _ = cli("assistants", "list", "--json", "--db", "other.db")
    assert code == 0
    assert json.loads(out)["data"] == []
    code, out, _ = cli("--db", "langchain-retro.db", "--json", "assistants", "list")
    assert [a["name"] for a in json.loads(out)["data"]] == ["default"]


@pytest.mark.parametrize("value", ["", "  "])
def test_empty_db_option_is_refused_not_a_throwaway_database(
    cli: Cli, clean_env: Path, capsys: pytest.CaptureFixture[str], value: str
) -> None:
    # sqlite3.connect("") opens a private temporary database: everything written
    # there would be gone when the command exits.
    for args in (("--db", value, "assistants", "list"), ("demo", "--db", value)):
        with pytest.raises(SystemExit) as exit_info:
            main(list(args))
        assert exit_info.value.code == 2
        err = capsys.readouterr().err
        assert "--db: needs a file path" in err
        assert "LANGCHAIN_RETRO_DB" in err
    assert list(clean_env.iterdir()) == []


def test_empty_db_variable_counts_as_unset(
    cli: Cli, clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LANGCHAIN_RETRO_DB", "")
    kept = make_assistant(cli)
    assert (clean_env / "langchain-retro.db").exists()
    # The next command sees what the first one wrote.
    assert [a["id"] for a in cli.json("assistants", "list")["data"]] == [kept]


def test_python_dash_m_runs_the_cli(clean_env: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "langchain_retro", "--json", "threads", "list"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["data"] == []


def test_a_reader_that_leaves_early_gets_no_traceback(clean_env: Path) -> None:
    db = clean_env / "many.db"
    with SQLiteStore(db) as store:
        for _ in range(100):  # 400 kB of JSON: far over a pipe's 64 kB buffer
            Assistant.create(store, model="m", instructions="x" * 4000)
    reader = subprocess.Popen(  # noqa: S603 - our own console script
        [
            *_console_script(),
            *("--db", str(db), "--json", "assistants", "list", "--limit", "100"),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=_env(),
    )
    assert reader.stdout is not None
    assert reader.stderr is not None
    assert reader.stdout.readline() == b"{\n"
    reader.stdout.close()  # as `| head -1` does
    with reader.stderr:
        err = reader.stderr.read().decode()
    assert reader.wait(timeout=60) == 1
    assert "Traceback" not in err
    assert err == ""


# --- documentation --------------------------------------------------------------------


def _subcommands(parser: Any, prefix: str = "") -> list[str]:
    """Every command path of the parser: 'assistants create', 'chat', ..."""
    found: list[str] = []
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                path = f"{prefix}{name}"
                children = _subcommands(sub, f"{path} ")
                found.extend(children or [path])
    return found


def _readme_cli_section() -> str:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"^## Command line\n(.*?)(?=^## )", readme, re.M | re.S)
    assert match, "README.md has no '## Command line' section"
    return match.group(1)


@pytest.mark.parametrize("command", _subcommands(build_parser()))
def test_every_command_is_documented_in_the_readme(command: str) -> None:
    assert f"langchain-retro {command}" in _readme_cli_section(), (
        f"'langchain-retro {command}' is not documented in README.md's "
        "'## Command line' section"
    )


# --- chat and demo --------------------------------------------------------------------


def _console_script() -> list[str]:
    """The installed ``langchain-retro`` script, else the module."""
    beside = Path(sys.executable).parent / "langchain-retro"
    if beside.exists():
        return [str(beside)]
    found = shutil.which("langchain-retro")
    return [found] if found else [sys.executable, "-m", "langchain_retro.cli"]


def _reply_lines(out: str) -> list[str]:
    """The lines of replies, stripped; each starts with its speaker's label."""
    return [
        line.strip()
        for line in out.splitlines()
        if re.match(r"\s*assistant( \[offline echo\])?> ", line)
    ]


def test_chat_offline_with_piped_stdin_in_a_subprocess(clean_env: Path) -> None:
    db = clean_env / "chat.db"
    done = subprocess.run(  # noqa: S603 - our own console script
        [*_console_script(), "--db", str(db), "chat", "--offline"],
        input="hi\n\nbye\n",
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env=_env(),
    )
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "OFFLINE MODE" in out
    replies = _reply_lines(out)
    assert replies == [
        "assistant [offline echo]> echo: hi",
        "assistant [offline echo]> echo: bye",
    ]
    (thread_id,) = set(re.findall(r"thread_\w+", out))
    assert f"chat --thread {thread_id}" in out
    assert "| 2 messages, 0 pending]" in out
    assert "| 4 messages, 0 pending]" in out

    with SQLiteStore(db) as store:
        history = AssistantThreadChatMessageHistory(store, thread_id).messages
    assert [m.content for m in history] == ["hi", "echo: hi", "bye", "echo: bye"]


def test_chat_resumes_a_thread_and_stops_at_quit(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("first\n"))
    code, out, _ = cli("chat", "--offline", "--instructions", "Be brief.")
    assert code == 0
    (thread_id,) = set(re.findall(r"thread_\w+", out))
    (assistant_id,) = set(re.findall(r"asst_\w+", out))
    assistant = cli.json("assistants", "show", assistant_id)
    assert assistant["model"] == "gpt-4o-mini"  # a real model, even offline
    assert assistant["instructions"] == "Be brief."

    monkeypatch.setattr(sys, "stdin", io.StringIO("second\n/quit\nnever sent\n"))
    code, out, _ = cli("chat", "--thread", thread_id, "--offline")
    assert code == 0
    assert f"resuming thread {thread_id}" in out
    assert _reply_lines(out) == ["assistant [offline echo]> echo: second"]
    shown = cli.json("threads", "show", thread_id)
    assert [m["content"] for m in shown["messages"]] == [
        "first",
        "echo: first",
        "second",
        "echo: second",
    ]
    assert shown["hwm"] == shown["messages"][-2]["id"]
    # Each reply names the run that wrote it and that run's assistant; input does not.
    assert [m["assistant_id"] for m in shown["messages"]] == [
        None,
        assistant_id,
        None,
        assistant_id,
    ]
    first_run, second_run = (
        shown["messages"][1]["run_id"],
        shown["messages"][3]["run_id"],
    )
    assert first_run.startswith("run_")
    assert second_run.startswith("run_")
    assert first_run != second_run
    assert shown["messages"][0]["run_id"] is None


def test_chat_on_an_assistant_with_a_model_override(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assistant_id = make_assistant(cli)
    monkeypatch.setattr(sys, "stdin", io.StringIO("hello\n"))
    code, out, _ = cli(
        "chat", "--assistant", assistant_id, "--model", "llama3.2", "--offline"
    )
    assert code == 0
    (thread_id,) = set(re.findall(r"thread_\w+", out))
    shown = cli.json("threads", "show", thread_id)
    assert shown["assistant_id"] == assistant_id
    assert shown["chat_completion_model"] == "llama3.2"


def test_chat_without_a_key_says_what_to_set_and_exits_2(cli: Cli) -> None:
    code, out, err = cli("chat")
    assert code == 2
    assert out == ""
    assert "OPENAI_API_KEY" in err
    assert "OPENAI_BASE_URL=http://localhost:11434/v1" in err  # Ollama
    assert "http://localhost:8000/v1" in err  # vLLM
    assert "--offline" in err
    assert cli.json("assistants", "list")["data"] == []


def test_chat_online_uses_the_environment_and_never_prints_the_key(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "sk-test-do-not-print-0123456789"  # noqa: S105 - a fake key
    with FakeChatServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", secret)
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
        code, out, err = cli("chat", "--model", "local-model")
        assert code == 0, err
        assert _reply_lines(out) == ["assistant> echo: hi"]
        assert "offline" not in out.lower()
        assert secret not in out + err
        (request,) = server.requests
        assert request.model == "local-model"
        assert request.headers["authorization"] == "<redacted>"

        server.fail_next(400, message="bad request from the fake")
        monkeypatch.setattr(sys, "stdin", io.StringIO("fails\nworks\n"))
        code, out, err = cli("chat", "--model", "local-model")
    assert code == 1
    assert err.count("\n") == 1
    assert err.startswith("langchain-retro: error: ")
    assert "assistant> echo: works" in out


def test_chat_ctrl_c_exits_130(cli: Cli, monkeypatch: pytest.MonkeyPatch) -> None:
    class Interrupted(io.StringIO):
        def readline(self, size: int | None = -1) -> str:
            raise KeyboardInterrupt

    monkeypatch.setattr(sys, "stdin", Interrupted())
    code, _, err = cli("chat", "--offline")
    assert code == 130
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "args",
    [
        ("chat", "--thread", "{thread}", "--model", "m"),
        ("chat", "--thread", "{thread}", "--temperature", "0"),
        ("chat", "--thread", "{thread}", "--instructions", ""),
        ("chat", "--assistant", "{assistant}", "--instructions", "Be brief."),
        ("chat", "--assistant", "{assistant}", "--temperature", "0"),
    ],
)
def test_chat_refuses_options_that_do_not_apply(
    cli: Cli, args: tuple[str, ...]
) -> None:
    # 0 and "" are values too: they used to pass the check and be ignored.
    assistant = make_assistant(cli)
    thread = cli.json("threads", "create", "--assistant", assistant)["id"]
    filled = [a.format(thread=thread, assistant=assistant) for a in args]
    code, out, err = cli(*filled, "--offline")
    assert code == 2
    assert out == ""
    assert err.startswith("langchain-retro chat: error: ")
    assert err.count("\n") == 1
    assert "update" in err  # names the command that applies the option
    assert cli.json("threads", "show", thread)["messages"] == []


def test_chat_on_an_unknown_thread_is_one_line(cli: Cli) -> None:
    code, out, err = cli("chat", "--thread", "thread_nope", "--offline")
    assert code == 1
    assert out == ""
    assert (
        err
        == "langchain-retro: error: No thread with id 'thread_nope' in this store.\n"
    )


def test_demo_runs_the_whole_flow_offline(cli: Cli, clean_env: Path) -> None:
    code, out, err = cli("demo")
    assert code == 0, err
    assert (clean_env / "langchain-retro.db").exists()
    assert "OPENAI_API_KEY is not set" in out
    replies = _reply_lines(out)
    assert len(replies) == 4
    assert all("[offline echo]" in line for line in replies)
    for count in (2, 4, 6):
        assert f"| {count} messages, 0 pending]" in out
    assert "| 7 messages, 1 pending]  <- pending" in out
    assert "| 8 messages, 0 pending]" in out

    (thread_id,) = set(re.findall(r"thread_\w+", out))
    shown = cli.json("threads", "show", thread_id)
    assert len(shown["messages"]) == 8
    # The hwm is the last message a run answered; the reply follows it.
    assert shown["hwm"] == shown["messages"][-2]["id"]
    assert shown["messages"][-1]["content"] == "echo: Is this message answered yet?"

    # A second run adds to the same store.
    code, _, _ = cli("demo", "--offline")
    assert code == 0
    assert len(cli.json("threads", "list")["data"]) == 2
