"""``.data/env``: every variable a command needs to reach the stack ``make dev`` runs.

The stack writes it once it is ready and removes it when it stops. It is a shell file
(``source .data/env``), and the operator commands (``sign``, ``replay``, ``events``,
``deadletters``) run in the checkout read it by themselves, so nothing has to be copied from the
banner or dug out of the logs.

It describes one stack, so it is used whole or not at all: a shell that points at another stack
(``REDIS_URL`` or ``MONGO_URI`` set) never mixes in the local one's values. Otherwise each
variable of the file fills in only where the environment leaves it unset.
"""

from __future__ import annotations

import os
import shlex
from collections.abc import Mapping
from pathlib import Path

__all__ = [
    "DATA_DIR",
    "ENV_FILE",
    "SECRET_FILE",
    "dev_environment",
    "read_env_file",
    "remove_env_file",
    "write_env_file",
]

#: Where ``make dev`` keeps its data, relative to the checkout (``courier-gateway dev --data-dir``).
DATA_DIR = ".data"
ENV_FILE = "env"
SECRET_FILE = "signing-secret"  # noqa: S105 - a file name, not a secret
#: Variables that name a stack: when one is set, the environment describes another stack.
_STACK_VARIABLES = ("REDIS_URL", "MONGO_URI")

_HEADER = """\
# The make dev stack running from this directory (pid {pid}); removed when it stops.
# `source {path}` puts its settings and courier-gateway into your shell; the courier-gateway
# commands run from this directory read it by themselves when these variables are unset.
"""


def write_env_file(
    directory: Path, variables: Mapping[str, str], *, bin_dir: Path | None = None
) -> Path:
    """Write ``directory/env`` (owner-only: it holds the signing secret) and return its path.

    ``bin_dir`` (where ``courier-gateway`` is installed) goes first on ``PATH``, so the commands
    in the README work as typed after ``source .data/env``.
    """
    path = directory / ENV_FILE
    lines = [_HEADER.format(pid=os.getpid(), path=_shown(path))]
    if bin_dir is not None:
        lines.append(f'export PATH={shlex.quote(str(bin_dir))}:"$PATH"\n')
    lines += [f"export {name}={shlex.quote(value)}\n" for name, value in variables.items()]
    temporary = path.with_name(f".{ENV_FILE}.{os.getpid()}")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as output:
        output.write("".join(lines))
    temporary.replace(path)  # readers never see half a file
    return path


def _shown(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def remove_env_file(directory: Path) -> None:
    """Remove ``directory/env`` (the stack stopped), if it is there."""
    (directory / ENV_FILE).unlink(missing_ok=True)


def read_env_file(path: Path) -> dict[str, str]:
    """The ``export NAME=value`` assignments of an env file (``PATH`` excepted)."""
    variables: dict[str, str] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.startswith("export "):
            continue
        words = shlex.split(line)
        if len(words) != 2 or "=" not in words[1]:
            continue
        name, value = words[1].split("=", 1)
        if name != "PATH":
            variables[name] = value
    return variables


def dev_environment(
    environ: Mapping[str, str] | None = None, *, cwd: Path | None = None
) -> tuple[dict[str, str], Path | None]:
    """The environment a command should use, and the env file it came from (if any).

    Without an env file, a stopped stack's signing secret (``.data/signing-secret``) still
    signs for the default source when nothing else configures one.
    """
    base = dict(os.environ if environ is None else environ)
    data = (cwd or Path.cwd()) / DATA_DIR
    if any(base.get(name) for name in _STACK_VARIABLES):
        return base, None
    path = data / ENV_FILE
    try:
        from_file = read_env_file(path)
    except (OSError, UnicodeDecodeError, ValueError):
        from_file = {}
    if from_file:
        merged = {**from_file, **{name: value for name, value in base.items() if value}}
        return merged, path
    if not base.get("SIGNING_SECRET") and not base.get("SOURCES_FILE"):
        try:
            secret = (data / SECRET_FILE).read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError):
            secret = ""
        if secret:
            return {**base, "SIGNING_SECRET": secret}, data / SECRET_FILE
    return base, None
