"""The sdist and the wheel, built offline from this checkout as a release would be.

The sdist is built from a copy of the source tree, and the wheel from the unpacked
sdist (as ``python -m build`` does), with the installed setuptools and no network.
The test extra installs a setuptools new enough (77, for the license expression);
with an older one these tests are skipped locally and fail under CI.
"""

from __future__ import annotations

import email
import os
import shutil
import subprocess
import sys
import tarfile
import zipfile
from email.message import Message
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REPO_URL = "https://github.com/langchain-retro/langchain-retro"
SETUPTOOLS_NEEDED = (77,)

_NOT_SOURCE = shutil.ignore_patterns(
    ".git",
    ".venv*",
    "build",
    "dist",
    "*.egg-info",
    "__pycache__",
    "*.py[cod]",
    ".*_cache",
    ".hypothesis",
    ".pgdata*",
    ".pgrun*",
    "*.db",
    "*.db-wal",
    "*.db-shm",
)


def _require_setuptools() -> None:
    import setuptools  # noqa: PLC0415

    version = tuple(int(p) for p in setuptools.__version__.split(".")[:1])
    if version >= SETUPTOOLS_NEEDED:
        return
    why = (
        f"setuptools {setuptools.__version__} is older than 77; "
        'pip install -e ".[test]" installs a newer one'
    )
    if os.environ.get("CI"):
        pytest.fail(why)
    pytest.skip(why)


def _backend(source: Path, call: str, out: Path) -> Path:
    """Run a setuptools build hook in ``source``; returns the file it made."""
    done = subprocess.run(  # noqa: S603 - this interpreter, our own source
        [
            sys.executable,
            "-c",
            f"import sys; from setuptools import build_meta as b; "
            f"print(b.{call}(sys.argv[1]))",
            str(out),
        ],
        cwd=source,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return out / done.stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(sdist, unpacked sdist, wheel)."""
    _require_setuptools()
    base = tmp_path_factory.mktemp("packaging")
    source = base / "source"
    shutil.copytree(ROOT, source, ignore=_NOT_SOURCE)
    sdist = _backend(source, "build_sdist", base / "dist")
    with tarfile.open(sdist) as archive:
        if hasattr(tarfile, "data_filter"):  # Python 3.11.4 and later
            archive.extractall(base / "unpacked", filter="data")
        else:  # pragma: no cover - our own archive, just built
            archive.extractall(base / "unpacked")  # noqa: S202
    (unpacked,) = (base / "unpacked").iterdir()
    wheel = _backend(unpacked, "build_wheel", base / "dist")
    return sdist, unpacked, wheel


def _sdist_names(sdist: Path) -> set[str]:
    with tarfile.open(sdist) as archive:
        names = [m.name for m in archive.getmembers() if m.isfile()]
    return {name.split("/", 1)[1] for name in names}


def _wheel_names(wheel: Path) -> set[str]:
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


def _metadata(wheel: Path) -> Message:
    with zipfile.ZipFile(wheel) as archive:
        (name,) = [n for n in archive.namelist() if n.endswith(".dist-info/METADATA")]
        return email.message_from_bytes(archive.read(name))


def _package_files() -> set[str]:
    return {
        str(p.relative_to(ROOT))
        for p in (ROOT / "langchain_retro").rglob("*")
        if p.suffix in (".py", ".typed")
    }


def test_sdist_holds_the_package_license_and_runnable_tests(
    built: tuple[Path, Path, Path],
) -> None:
    names = _sdist_names(built[0])
    assert {"LICENSE", "README.md", "pyproject.toml", "PKG-INFO"} <= names
    assert _package_files() <= names
    # Tests ship with what they need: conftest, the shared helpers, the examples
    # and README they check, the scripts that start PostgreSQL.
    tests = {str(p.relative_to(ROOT)) for p in (ROOT / "tests").glob("*.py")}
    assert {"tests/conftest.py", "tests/_helpers.py"} <= tests <= names
    examples = {str(p.relative_to(ROOT)) for p in (ROOT / "examples").glob("*.py")}
    assert examples <= names
    docs = {str(p.relative_to(ROOT)) for p in (ROOT / "docs").glob("*.md")}
    assert docs  # the README links them; the tests run their code blocks
    assert docs <= names
    assert {"scripts/test.sh", "scripts/postgres.sh"} <= names
    assert not [n for n in names if n.startswith(("bench/", ".ci/", ".git"))]
    assert not [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".db"))]


def test_the_sdist_tests_run_from_the_unpacked_sdist(
    built: tuple[Path, Path, Path],
) -> None:
    unpacked = built[1]
    env = {k: v for k, v in os.environ.items() if k != "CI"}
    pytest_argv = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
    # The unpacked folder comes first on sys.path, so its package is the one tested.
    check = "import langchain_retro, sys; print(langchain_retro.__file__)"
    # The three start at once: most of their time is Python starting up, which the
    # two cores share.
    started = [
        subprocess.Popen(  # noqa: S603
            argv,
            cwd=unpacked,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=argv_env,
        )
        for argv, argv_env in (
            ([sys.executable, "-c", check], None),
            (
                [
                    *pytest_argv,
                    "-p",
                    "no:randomly",
                    "tests/test_public_api.py",
                    "tests/test_readme.py",
                    "-k",
                    "not block_runs and not test_sh",
                ],
                env,
            ),
            ([*pytest_argv, "--collect-only"], env),
        )
    ]
    try:
        where, done, collected = (
            subprocess.CompletedProcess(each.args, each.returncode, *outputs)
            for each in started
            for outputs in [each.communicate(timeout=300)]
        )
    finally:
        for each in started:
            each.kill()
            each.wait()
    assert where.returncode == 0, where.stderr
    assert where.stdout.startswith(str(unpacked))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-2000:]
    assert " passed" in done.stdout
    assert collected.returncode == 0, collected.stdout[-3000:]
    assert "error" not in collected.stdout.splitlines()[-1]


def test_wheel_holds_the_package_and_its_license_only(
    built: tuple[Path, Path, Path],
) -> None:
    names = _wheel_names(built[2])
    info = "langchain_retro-0.1.0.dist-info/"
    assert f"{info}licenses/LICENSE" in names
    package = {n for n in names if not n.startswith(info)}
    assert package == _package_files()
    with zipfile.ZipFile(built[2]) as archive:
        entry_points = archive.read(f"{info}entry_points.txt").decode()
    assert "langchain-retro = langchain_retro.cli:main" in entry_points


def test_metadata_license_urls_and_classifiers(
    built: tuple[Path, Path, Path],
) -> None:
    metadata = _metadata(built[2])
    assert metadata["License-Expression"] == "MIT"
    assert metadata.get_all("License-File") == ["LICENSE"]
    urls = dict(
        (part.strip() for part in url.split(",", 1))
        for url in metadata.get_all("Project-URL") or []
    )
    assert urls["Source"] == REPO_URL
    assert urls["Issues"] == f"{REPO_URL}/issues"
    classifiers = set(metadata.get_all("Classifier") or [])
    for version in ("3.11", "3.12", "3.13"):
        assert f"Programming Language :: Python :: {version}" in classifiers
    assert "Operating System :: OS Independent" in classifiers
    assert any(c.startswith("Topic :: ") for c in classifiers)
    assert metadata["Requires-Python"] == ">=3.11"
    # The long description is the README, whose links must work on the index.
    description = metadata.get_payload()
    assert isinstance(description, str)
    assert f"{REPO_URL}/blob/main/examples/hello_world.py" in description
    assert "](examples/" not in description
    assert "langchain-retro developers" in (ROOT / "LICENSE").read_text()
