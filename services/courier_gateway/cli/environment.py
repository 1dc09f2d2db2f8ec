"""The settings of an operator command (``sign``, ``replay``, ``events``, ``deadletters``).

They come from the environment, completed from ``.data/env`` when the command runs in a checkout
where ``make dev`` runs (see ``devstack/envfile.py``). When a setting from that file is wrong,
for example the stack was killed and its ports are gone, the message says where it came from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from courier_gateway.config import ConfigError, Settings
from courier_gateway.devstack.envfile import ENV_FILE, dev_environment

__all__ = ["CommandSettings", "command_settings"]


def _explain(error: ConfigError, origin: Path | None) -> ConfigError:
    if origin is None:
        return error
    if origin.name != ENV_FILE:
        return ConfigError(f"{error} (the signing secret came from {origin})")
    return ConfigError(f"{error} (settings from {origin}: is `make dev` still running there?)")


@dataclass(frozen=True, slots=True)
class CommandSettings:
    """Validated settings and the file that completed them (``None``: the environment only)."""

    settings: Settings
    origin: Path | None

    @contextlib.contextmanager
    def explained(self) -> Iterator[None]:
        """Add to a configuration error raised inside where the settings came from."""
        try:
            yield
        except ConfigError as error:
            raise _explain(error, self.origin) from None


def command_settings() -> CommandSettings:
    """The command's settings: the environment, completed from ``.data/env`` if present."""
    environ, origin = dev_environment()
    try:
        settings = Settings.from_env(environ)
    except ConfigError as error:
        raise _explain(error, origin) from None
    return CommandSettings(settings, origin)
