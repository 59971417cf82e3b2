"""Hints are commands that work as printed; options are applied or refused, never
dropped; assistants and threads can be changed from the command line."""

from __future__ import annotations

import io
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import Cli, make_assistant

from langchain_retro.cli import main
from langchain_retro.testing import FakeChatServer


@pytest.fixture(autouse=True)
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("LANGCHAIN_RETRO_DB", "OPENAI_API_KEY", "OPENAI_BASE_URL"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> Cli:
    return Cli(capsys)


def hint(out: str, label: str) -> list[str]:
    """The arguments of the command printed after ``label``, program name dropped."""
    match = re.search(rf"{re.escape(label)}\s*([^\n]*)", out)
    assert match, f"no {label!r} hint in:\n{out}"
    text = match.group(1)
    if label.startswith("("):
        text = text.removesuffix(")")
    words = shlex.split(text)
    if words[1:3] == ["-m", "langchain_retro"]:
        return words[3:]
    assert Path(words[0]).name == "langchain-retro", words
    return words[1:]


# --- listings -------------------------------------------------------------------------


def test_threads_list_more_hint_keeps_filters_limit_and_db(cli: Cli) -> None:
    db = ["--db", "other place.db"]  # a space: the hint must quote it
    mine = make_assistant(cli, *db)
    other = make_assistant(cli, *db)
    wanted = []
    for i in range(5):
        region = "eu" if i % 2 == 0 else "us"
        made = cli.json(
            *db, "threads", "create", "--assistant", mine, "--metadata", f"r={region}"
        )
        if region == "eu":
            wanted.append(made["id"])
    cli.json(*db, "threads", "create", "--assistant", other, "--metadata", "r=eu")

    args = [*db, "threads", "list", "--assistant", mine, "--metadata", "r=eu"]
    seen: list[str] = []
    for _ in range(5):
        code, out, err = cli(*args, "--limit", "1") if not seen else cli(*args)
        assert code == 0, err
        seen += re.findall(r"^(thread_\w+)", out, re.M)
        if "(more:" not in out:
            break
        args = hint(out, "(more:")
        assert "--limit" in args
    # Each page followed the printed hint: the same filters, page size and file.
    assert seen == wanted[::-1]


def test_assistants_list_more_hint_keeps_metadata_and_limit(cli: Cli) -> None:
    ids = [make_assistant(cli, "--metadata", f"team={t}") for t in "abaa"]
    code, out, _ = cli("assistants", "list", "--metadata", "team=a", "--limit", "2")
    assert code == 0
    args = hint(out, "(more:")
    assert args[:2] == ["assistants", "list"]
    code, out, _ = cli(*args)
    assert re.findall(r"^(asst_\w+)", out, re.M) == [ids[0]]
    assert "(more:" not in out


def test_default_limit_and_database_are_not_repeated(cli: Cli) -> None:
    for _ in range(21):
        make_assistant(cli)
    _, out, _ = cli("assistants", "list")
    args = hint(out, "(more:")
    assert "--limit" not in args
    assert "--db" not in args


def test_hints_name_a_database_from_the_environment(
    cli: Cli, monkeypatch: pytest.MonkeyPatch, clean_env: Path
) -> None:
    # A new shell may not have the variable: the hint must not depend on it.
    monkeypatch.setenv("LANGCHAIN_RETRO_DB", str(clean_env / "env.db"))
    make_assistant(cli)
    make_assistant(cli)
    _, out, _ = cli("assistants", "list", "--limit", "1")
    args = hint(out, "(more:")
    assert args[:2] == ["--db", str(clean_env / "env.db")]


# --- chat -----------------------------------------------------------------------------


def test_offline_chat_names_a_real_model_and_its_hint_stays_offline(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
    code, out, err = cli("--db", "chat.db", "chat", "--offline")
    assert code == 0, err
    (assistant_id,) = set(re.findall(r"asst_\w+", out))
    resume = hint(out, "resume later with:")
    (thread_id,) = set(re.findall(r"thread_\w+", out))
    assert resume == ["--db", "chat.db", "chat", "--thread", thread_id, "--offline"]

    # The hint works as printed: offline, on the same database.
    monkeypatch.setattr(sys, "stdin", io.StringIO("again\n"))
    code, out, err = cli(*resume)
    assert code == 0, err
    assert "assistant [offline echo]> echo: again" in out
    assistant = cli.json("--db", "chat.db", "assistants", "show", assistant_id)
    assert assistant["model"] == "gpt-4o-mini"

    # Going online later sends the assistant's real model, not the echo model's.
    with FakeChatServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setattr(sys, "stdin", io.StringIO("online\n"))
        code, _, err = cli("--db", "chat.db", "chat", "--thread", thread_id)
        assert code == 0, err
        (request,) = server.requests
    assert request.model == "gpt-4o-mini"


def test_no_key_message_offers_the_same_chat_offline(cli: Cli) -> None:
    assistant = make_assistant(cli, "--db", "x.db")
    code, out, err = cli("--db", "x.db", "chat", "--assistant", assistant)
    assert code == 2
    assert out == ""
    offered = hint(err, "Or try it without any model:")
    assert offered == ["--db", "x.db", "chat", "--assistant", assistant, "--offline"]


def test_chat_thread_temperature_zero_is_refused_with_the_command_that_applies_it(
    cli: Cli, monkeypatch: pytest.MonkeyPatch
) -> None:
    assistant = make_assistant(cli, "--temperature", "0.7")
    thread = cli.json("threads", "create", "--assistant", assistant)["id"]
    code, out, err = cli("chat", "--thread", thread, "--temperature", "0", "--offline")
    assert code == 2
    assert out == ""
    fix = f"langchain-retro assistants update {assistant} --temperature 0"
    assert fix in err

    code, _, err = cli(*shlex.split(fix)[1:])
    assert code == 0, err
    with FakeChatServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        monkeypatch.setattr(sys, "stdin", io.StringIO("hi\n"))
        code, _, err = cli("chat", "--thread", thread)
        assert code == 0, err
        (request,) = server.requests
    assert request.temperature == 0


def test_chat_thread_model_is_refused_with_threads_update(cli: Cli) -> None:
    assistant = make_assistant(cli)
    thread = cli.json("threads", "create", "--assistant", assistant)["id"]
    code, _, err = cli("chat", "--thread", thread, "--model", "llama3.2", "--offline")
    assert code == 2
    assert f"langchain-retro threads update {thread} --model llama3.2" in err


@pytest.mark.parametrize("command", ["chat", "demo"])
def test_json_is_refused_where_it_would_be_ignored(cli: Cli, command: str) -> None:
    code, out, err = cli("--json", command, "--offline")
    assert code == 2
    assert out == ""
    assert "--json" in err
    assert cli.json("assistants", "list")["data"] == []


def test_demo_names_a_real_model_and_its_hints_name_the_database(cli: Cli) -> None:
    code, out, err = cli("demo", "--db", "demo.db")
    assert code == 0, err
    (assistant_id,) = set(re.findall(r"asst_\w+", out))
    shown = cli.json("--db", "demo.db", "assistants", "show", assistant_id)
    assert shown["model"] == "gpt-4o-mini"
    look = hint(out, "Look around:")
    keep = hint(out, "Keep chatting:")
    assert look[:2] == keep[:2] == ["--db", "demo.db"]
    assert keep[-1] == "--offline"
    code, shown_out, _ = cli(*look)
    assert code == 0
    assert "8 (0 pending" in shown_out


@pytest.mark.parametrize(
    "args",
    [
        ("assistants", "create", "--model", ""),
        ("chat", "--model", " ", "--offline"),
        ("threads", "update", "thread_x", "--model", ""),
    ],
)
def test_empty_model_name_is_refused(cli: Cli, args: tuple[str, ...]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(list(args))
    assert exit_info.value.code == 2


# --- assistants update ---------------------------------------------------------------


def test_assistants_update_sets_unsets_and_edits_metadata(cli: Cli) -> None:
    assistant = make_assistant(
        cli, "--name", "Old", "--top-p", "0.5", "--metadata", "team=a"
    )
    updated = cli.json(
        "assistants",
        "update",
        assistant,
        "--model",
        "gpt-4o",
        "--temperature",
        "0",
        "--instructions",
        "Be brief.",
        "--unset",
        "top-p",
        "--unset",
        "name",
        "--metadata",
        "tier=gold",
        "--delete-metadata",
        "team",
    )
    assert updated["model"] == "gpt-4o"
    assert updated["temperature"] == 0
    assert updated["instructions"] == "Be brief."
    assert updated["top_p"] is None
    assert updated["name"] is None
    assert updated["metadata"] == {"tier": "gold"}
    assert cli.json("assistants", "show", assistant) == updated

    code, out, _ = cli("assistants", "update", assistant, "--top-p", "0.9")
    assert code == 0
    assert "top_p: - -> 0.9" in out


@pytest.mark.parametrize(
    ("args", "status", "says"),
    [
        ((), 2, "nothing to change"),
        (("--top-p", "0.5", "--unset", "top-p"), 2, "contradict"),
        (("--metadata", "k=v", "--delete-metadata", "k"), 2, "contradict"),
        (("--temperature", "5", "--name", "New"), 1, "temperature"),
    ],
)
def test_assistants_update_refuses_and_writes_nothing(
    cli: Cli, args: tuple[str, ...], status: int, says: str
) -> None:
    assistant = make_assistant(cli, "--name", "Old")
    before = cli.json("assistants", "show", assistant)
    code, out, err = cli("assistants", "update", assistant, *args)
    assert code == status
    assert out == ""
    assert says in err
    assert err.count("\n") == 1
    assert cli.json("assistants", "show", assistant) == before


def test_assistants_update_unknown_id(cli: Cli) -> None:
    code, _, err = cli("assistants", "update", "asst_nope", "--name", "x")
    assert code == 1
    assert (
        err
        == "langchain-retro: error: No assistant with id 'asst_nope' in this store.\n"
    )


# --- threads update ------------------------------------------------------------------


def test_threads_update_model_assistant_and_metadata(cli: Cli) -> None:
    first, second = make_assistant(cli), make_assistant(cli)
    thread = cli.json(
        "threads", "create", "--assistant", first, "--metadata", "region=eu"
    )["id"]
    updated = cli.json(
        "threads",
        "update",
        thread,
        "--model",
        "llama3.2",
        "--assistant",
        second,
        "--metadata",
        "tier=gold",
        "--delete-metadata",
        "region",
    )
    assert updated["chat_completion_model"] == "llama3.2"
    assert updated["assistant_id"] == second
    assert updated["metadata"] == {"tier": "gold"}
    assert cli.json("threads", "list", "--assistant", second)["data"][0]["id"] == thread

    code, out, _ = cli("threads", "update", thread, "--unset", "model")
    assert code == 0
    assert "chat_completion_model: llama3.2 -> -" in out
    assert cli.json("threads", "show", thread)["chat_completion_model"] is None


def test_threads_update_to_a_missing_assistant_writes_nothing(cli: Cli) -> None:
    assistant = make_assistant(cli)
    thread = cli.json("threads", "create", "--assistant", assistant)["id"]
    code, _, err = cli(
        "threads", "update", thread, "--assistant", "asst_nope", "--model", "m"
    )
    assert code == 1
    assert "asst_nope" in err
    shown = cli.json("threads", "show", thread)
    assert (shown["assistant_id"], shown["chat_completion_model"]) == (assistant, None)


# --- the program in hints -------------------------------------------------------------


def _start(command: list[str], path: str, cwd: Path) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY"}}
    env["PATH"] = path
    # This checkout's package, whichever checkout the script was installed from.
    env["PYTHONPATH"] = str(Path(__file__).resolve().parents[1])
    cwd.mkdir()
    return subprocess.Popen(  # noqa: S603 - our own console script
        [*command, "demo", "--offline"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )


def _output(started: subprocess.Popen[str]) -> str:
    try:
        out, err = started.communicate(timeout=60)
    finally:
        started.kill()
    assert started.returncode == 0, err
    return out


def test_hints_call_the_program_as_it_was_called(clean_env: Path) -> None:
    # In a new shell the virtualenv is not activated: `langchain-retro` is only a
    # command to paste where that name finds this very script.
    script = Path(sys.executable).parent / "langchain-retro"
    if not script.exists():
        pytest.skip("the console script is not installed beside this interpreter")
    bare = "/usr/bin:/bin"
    # The three start at once (each in a folder of its own): most of their time is
    # Python starting up, which the two cores share.
    started = [
        _start([str(script)], bare, clean_env / "script"),
        _start(["langchain-retro"], f"{script.parent}:{bare}", clean_env / "on_path"),
        _start([sys.executable, "-m", "langchain_retro"], bare, clean_env / "module"),
    ]
    try:
        out, on_path, as_module = (_output(each) for each in started)
    finally:
        for each in started:
            each.kill()
            each.wait()
    keep = hint(out, "Keep chatting:")
    assert keep[-4:] == ["chat", "--thread", keep[-2], "--offline"]
    match = re.search(r"Look around:\s*(.*)", out)
    assert match
    assert shlex.split(match.group(1))[0] == str(script)

    assert re.search(r"Look around: langchain-retro threads show", on_path)

    match = re.search(r"Look around:\s*(.*)", as_module)
    assert match
    assert shlex.split(match.group(1))[:3] == [sys.executable, "-m", "langchain_retro"]
