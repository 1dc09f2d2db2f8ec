"""The README's quick start and the runbook, done exactly as written, in a fresh copy of the repo.

A new user's path, end to end, with nothing but what the documents say:

1. ``make dev`` in a fresh copy of the repository (the files ``git`` tracks, plus new ones not
   ignored: what a clone of this commit holds), waiting for its banner;
2. in a second "terminal" (one bash process, so ``source`` carries over; no variable but a
   system ``PATH``): every line of the README's walk-through, the pasted ``curl`` being the one
   the banner printed, then every line of every ``bash`` block of ``docs/runbook.md``; each step
   must exit 0 without a traceback, and the README's steps must say what the README says;
3. a second ``make dev`` in the same checkout: refused within seconds in one line, the first
   stack still answering and accepting events;
4. Ctrl-C to ``make dev``'s process group, as a terminal sends it: everything stops, without a
   traceback, ``.data/env`` is removed, and the embedded store logged no per-command lines.

What is not done as a user would: installing. ``make dev``'s first run installs the packages
(about a minute); here the copy gets a light ``.venv`` that reuses the packages installed for
the test run, with the copy's own sources first on its path and the install stamp set, so
``make dev`` runs its real recipe otherwise. ``API_PORT`` is set for ``make dev`` because tests
never take a fixed port; the steps of the second terminal get no variable at all.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import sysconfig
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psutil
import pytest
from pymongo import MongoClient

from courier_gateway.devstack.envfile import read_env_file
from courier_gateway.devstack.processes import free_port
from tests.support.servers import wait_for

ROOT = Path(__file__).resolve().parents[2]
SYSTEM_PATH = os.pathsep.join(
    dict.fromkeys(
        [
            str(Path(shutil.which("redis-server") or "/usr/bin/redis-server").parent),
            "/usr/local/bin",
            "/usr/bin",
            "/bin",
        ]
    )
)
PASTE_CURL = "# paste the curl command that make dev printed"


def fresh_copy(target: Path) -> Path:
    """The repository's files as a clone of the current work would have them (no .venv, .data)."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        check=True,
    ).stdout.split(b"\0")
    for name in filter(None, (entry.decode() for entry in listed)):
        source = ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the work tree, not yet committed
        destination = target / name
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, destination, follow_symlinks=False)
    return target


def light_venv(clone: Path) -> None:
    """A ``.venv`` that runs the copy's sources with the packages already installed here."""
    venv = clone / ".venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    site_packages = venv / "lib" / version / "site-packages"
    # The copy's packages first; the installed packages after (their .pth files included).
    (site_packages / "_copy.pth").write_text(f"{clone / 'services'}\n{clone / 'operator'}\n")
    shared = sysconfig.get_paths()["purelib"]
    (site_packages / "_shared.pth").write_text(f"import site; site.addsitedir({shared!r})\n")
    script = venv / "bin" / "courier-gateway"
    script.write_text(
        f"#!{venv / 'bin' / 'python'}\nimport sys\nfrom courier_gateway.cli import main\n"
        "sys.exit(main())\n"
    )
    script.chmod(0o755)
    (venv / ".installed-runtime").touch()  # newer than pyproject.toml: make skips the install


@dataclass
class Running:
    """A process whose output lines are collected as they come."""

    process: subprocess.Popen[str]
    out: list[str] = field(default_factory=list)
    err: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        for stream, lines in ((self.process.stdout, self.out), (self.process.stderr, self.err)):
            threading.Thread(target=self._read, args=(stream, lines), daemon=True).start()

    @staticmethod
    def _read(stream: object, lines: list[str]) -> None:
        for line in stream:  # type: ignore[attr-defined]
            lines.append(line.rstrip("\n"))

    def descendants(self) -> list[psutil.Process]:
        try:
            return psutil.Process(self.process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            return []


def make_dev(clone: Path, api_port: int) -> Running:
    """``make dev`` in its own process group, as a terminal runs a foreground job."""
    process = subprocess.Popen(
        ["make", "dev"],
        cwd=clone,
        env={"PATH": SYSTEM_PATH, "HOME": str(clone), "API_PORT": str(api_port)},
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    return Running(process)


def code_blocks(text: str, language: str = "bash") -> list[list[str]]:
    """The non-empty lines of each fenced block of ``language``."""
    blocks = []
    for part in text.split(f"```{language}\n")[1:]:
        body = part.split("```", 1)[0]
        blocks.append([line for line in body.splitlines() if line.strip()])
    return blocks


def readme_steps() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    return code_blocks(readme.split("<!-- walkthrough -->", 1)[1])[0]


def runbook_steps() -> list[str]:
    return [
        line for block in code_blocks((ROOT / "docs" / "runbook.md").read_text()) for line in block
    ]


@dataclass
class Step:
    command: str
    code: int
    milliseconds: int
    out: str
    err: str


def second_terminal(clone: Path, commands: list[str], scratch: Path) -> list[Step]:
    """Run ``commands`` one after another in one bash, as typed; each one's output and code."""
    lines = [f"cd {clone}"]
    for index, command in enumerate(commands):
        out, err, code = (scratch / f"{index}.{kind}" for kind in ("out", "err", "code"))
        lines.append(
            f"started=$(date +%s%N)\n{{\n{command}\n}} >{out} 2>{err}\n"
            f'echo "$? $(( ($(date +%s%N) - started) / 1000000 ))" >{code}'
        )
    script = scratch / "terminal.sh"
    script.write_text("\n".join(lines) + "\n")
    subprocess.run(
        ["bash", "--noprofile", "--norc", str(script)],
        env={"PATH": SYSTEM_PATH, "HOME": str(clone)},
        timeout=300,
        check=False,
    )
    steps = []
    for index, command in enumerate(commands):
        code, milliseconds = (scratch / f"{index}.code").read_text().split()
        out, err = ((scratch / f"{index}.{kind}").read_text() for kind in ("out", "err"))
        steps.append(Step(command, int(code), int(milliseconds), out, err))
    return steps


def assert_succeeded(step: Step) -> None:
    assert step.code == 0, f"{step.command!r} exited {step.code}:\n{step.out}\n{step.err}"
    assert "Traceback" not in step.out + step.err, step


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    copy = fresh_copy(tmp_path / "courier-gateway")
    light_venv(copy)
    return copy


def test_readme_and_runbook_as_written_in_a_fresh_clone(clone: Path, tmp_path: Path) -> None:
    api_port = free_port()
    first = make_dev(clone, api_port)
    children: list[psutil.Process] = []
    try:
        assert wait_for(
            lambda: (
                any(line.startswith("curl ") for line in first.out)
                or first.process.poll() is not None
            ),
            timeout=120,
            interval=0.2,
        )
        curls = [line for line in first.out if line.startswith("curl ")]
        assert curls, "\n".join(first.out + first.err)
        banner = "\n".join(first.out)
        assert f"Courier Gateway is running at http://127.0.0.1:{api_port}" in banner
        assert "source .data/env" in banner
        children = first.descendants()

        # The README's walk-through, line by line.
        steps = readme_steps()
        assert steps[0].startswith("source .data/env ")
        commands = [curls[0] if step.startswith(PASTE_CURL) else step for step in steps]
        scratch = tmp_path / "readme"
        scratch.mkdir()
        done = second_terminal(clone, commands, scratch)
        for step in done:
            assert_succeeded(step)
        pasted, sent, bad, story, stats, replayed = done[1:]
        assert json.loads(pasted.out)["acknowledged"] is True
        assert sent.out.startswith("202 ") and '"acknowledged":true' in sent.out
        assert bad.out.startswith("202 ") and '"eventId":"evt_bad_1"' in bad.out
        assert story.out.startswith("courier evt_bad_1: dead-lettered: UNKNOWN_STATUS")
        assert "  attempts\n" in story.out and "  trace id " in story.out
        assert any(line.split() == ["UNKNOWN_STATUS", "1"] for line in stats.out.splitlines())
        assert "matched 1, replayed 1" in replayed.out

        # The replayed copy fails again (nothing fixed it): the runbook starts from there.
        stack = read_env_file(clone / ".data" / "env")
        with MongoClient(stack["MONGO_URI"]) as client:
            letters = client[stack["MONGO_DB"]]["dead_letter_events"]
            assert wait_for(
                lambda: letters.count_documents({"eventId": "evt_bad_1", "deadLetterCount": 2}),
                timeout=30,
                interval=0.2,
            )

        # The runbook's commands, block after block, in the same kind of terminal.
        scratch = tmp_path / "runbook"
        scratch.mkdir()
        done = second_terminal(clone, ["source .data/env", *runbook_steps()], scratch)
        for step in done:
            assert_succeeded(step)
        for step in done[1:]:
            if step.command.startswith("courier-gateway "):
                assert step.out.strip(), f"{step.command!r} printed nothing"
        shown = {step.command: step.out for step in done}
        assert shown["courier-gateway events show courier evt_bad_1"].startswith(
            "courier evt_bad_1: dead-lettered: UNKNOWN_STATUS"
        )
        assert json.loads(shown["courier-gateway events show courier evt_bad_1 --json"])
        assert (
            '"status": "teleported"' in shown["courier-gateway deadletters show courier evt_bad_1"]
        )

        # A second make dev in the same checkout: one line, at once; the first one unharmed.
        started = time.monotonic()
        second = subprocess.run(
            ["make", "dev"],
            cwd=clone,
            env={"PATH": SYSTEM_PATH, "HOME": str(clone), "API_PORT": str(free_port())},
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        elapsed = time.monotonic() - started
        assert second.returncode != 0
        ours = [line for line in second.stderr.splitlines() if not line.startswith("make")]
        assert len(ours) == 1, second.stderr
        assert ours[0].startswith("courier-gateway dev: another courier-gateway dev is already")
        assert f"http://127.0.0.1:{api_port}" in ours[0]
        assert elapsed < 4, f"the refusal took {elapsed:.1f} s"  # ~0.3 s; margin for a busy box
        assert second.stdout == ""
        assert httpx.get(f"http://127.0.0.1:{api_port}/ready", timeout=5).status_code == 200
        scratch = tmp_path / "after"
        scratch.mkdir()
        [sent_again] = second_terminal(
            clone, ["source .data/env", "courier-gateway sign --send"], scratch
        )[1:]
        assert_succeeded(sent_again)
        assert sent_again.out.startswith("202 ")
        assert first.process.poll() is None

        # Ctrl-C, as the terminal sends it: to the whole foreground process group.
        os.killpg(first.process.pid, signal.SIGINT)
        first.process.wait(timeout=60)
        output = "\n".join(first.out + first.err)
        assert "Traceback" not in output, output
        _, alive = psutil.wait_procs(children, timeout=20)
        assert alive == []
        assert not (clone / ".data" / "env").exists()
        store_log = (clone / ".data" / "store.log").read_text()
        assert "ping" not in store_log and "Calling db.command" not in store_log, store_log[:2000]
    finally:
        if first.process.poll() is None:
            for child in first.descendants():
                child.kill()
            first.process.kill()
            first.process.wait(timeout=10)
