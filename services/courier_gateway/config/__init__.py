"""Configuration: the settings object read from the environment, and the signing sources.

Both are validated once at start-up; a bad value stops the process with one line that names the
variable (or the file and field) and what was expected.
"""

from courier_gateway.config._errors import ConfigError
from courier_gateway.config.settings import Settings
from courier_gateway.config.sources import (
    Key,
    KeyRing,
    RateLimit,
    Scheme,
    Source,
    load_sources,
)

__all__ = [
    "ConfigError",
    "Key",
    "KeyRing",
    "RateLimit",
    "Scheme",
    "Settings",
    "Source",
    "load_sources",
]
