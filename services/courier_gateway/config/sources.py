"""Signing sources: who may post events, with which scheme and which keys.

A source is configured either by ``SIGNING_SECRET`` (the default source ``courier``, scheme ``v1``)
or by the YAML ``SOURCES_FILE``. Keys come inline (development) or from a directory with one file
per key, the file name being the key id: that is how Kubernetes mounts a Secret, and Kubernetes
replaces those files in place when the Secret changes. :class:`KeyRing` re-reads such directories
so that rotation needs no restart; a broken key file at run time is skipped with a warning rather
than taking every other key of the source down with it.
"""

from __future__ import annotations

import base64
import binascii
import logging
import re
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from courier_gateway.config._errors import ConfigError, describe_validation_error
from courier_gateway.config.settings import Settings
from courier_gateway.tenancy import DEFAULT_SOURCE

__all__ = ["DEFAULT_SOURCE", "Key", "KeyRing", "RateLimit", "Scheme", "Source", "load_sources"]

log = logging.getLogger(__name__)

_SOURCE_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
_SOURCE_NAME = re.compile(_SOURCE_NAME_PATTERN)
_KEY_ID = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_KEY_ID_RE = re.compile(_KEY_ID)


class Scheme(StrEnum):
    """Signature schemes a source can use (see the README for how they differ)."""

    V1 = "v1"
    STANDARD_WEBHOOKS = "standard-webhooks"
    LEGACY_BODY = "legacy-body"


@dataclass(frozen=True, slots=True)
class Key:
    """One active signing key: its id (recorded with each event) and the HMAC key bytes."""

    id: str
    secret: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class RateLimit:
    """A token bucket, ``per_second`` sustained and ``burst`` at once, shared by all processes."""

    per_second: float
    burst: int


@dataclass(slots=True)
class Source:
    """A configured source; ``keys`` is replaced wholesale on reload, so readers never see a mix."""

    name: str
    scheme: Scheme
    tolerance_seconds: int
    rate_limit: RateLimit | None
    inline_keys: tuple[Key, ...]
    secrets_dir: Path | None
    keys: tuple[Key, ...] = ()
    #: Where this source's shipments live: its own name, unless the file shares one on purpose.
    shipment_namespace: str = ""

    def __post_init__(self) -> None:
        if not self.shipment_namespace:
            self.shipment_namespace = self.name


def decode_secret(scheme: Scheme, value: str) -> bytes:
    """Turn a configured secret into HMAC key bytes, as the scheme defines it.

    Standard Webhooks secrets are ``whsec_`` followed by base64; the others are used as UTF-8 text.
    """
    value = value.strip()
    if scheme is Scheme.STANDARD_WEBHOOKS:
        if not value.startswith("whsec_"):
            raise ValueError("a standard-webhooks secret must start with 'whsec_'")
        try:
            raw = base64.b64decode(value.removeprefix("whsec_"), validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("the part after 'whsec_' is not valid base64") from None
        if len(raw) < 16:
            raise ValueError("the decoded key must be at least 16 bytes")
        return raw
    if len(value) < 8:
        raise ValueError("a secret must be at least 8 characters")
    return value.encode()


class _RateLimitFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    perSecond: Annotated[float, Field(gt=0, le=1_000_000)]  # noqa: N815 - the file's own spelling
    burst: Annotated[int, Field(ge=1, le=10_000_000)]


class _InlineKeyFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    id: str = Field(pattern=_KEY_ID)
    value: str = Field(min_length=1)


class _SourceFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    scheme: Scheme = Scheme.V1
    secrets: list[_InlineKeyFile] = Field(default_factory=list)
    secretsDir: Path | None = None  # noqa: N815
    toleranceSeconds: Annotated[int, Field(ge=1, le=86400)] | None = None  # noqa: N815
    rateLimit: _RateLimitFile | None = None  # noqa: N815
    # Sources that really share parcels (an aggregator and a carrier) name one namespace.
    shipmentNamespace: str | None = Field(default=None, pattern=_SOURCE_NAME_PATTERN)  # noqa: N815

    @model_validator(mode="after")
    def _has_keys(self) -> _SourceFile:
        if not self.secrets and self.secretsDir is None:
            raise ValueError("give 'secrets' or 'secretsDir'")
        ids = [key.id for key in self.secrets]
        if len(ids) != len(set(ids)):
            raise ValueError("secret ids must be unique")
        return self


class _SourcesFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sources: dict[str, _SourceFile]


def _read_sources_file(path: Path) -> _SourcesFile:
    try:
        document: Any = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(f"SOURCES_FILE {path}: cannot be read ({error.strerror})") from None
    except (yaml.YAMLError, UnicodeDecodeError) as error:
        reason = str(error).splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            reason += f" at line {mark.line + 1}, column {mark.column + 1}"
        raise ConfigError(f"SOURCES_FILE {path}: not valid YAML ({reason})") from None
    try:
        parsed = _SourcesFile.model_validate(document)
    except ValidationError as error:
        problem = describe_validation_error(error, secret=frozenset({"value"}))
        raise ConfigError(f"SOURCES_FILE {path}: {problem}") from None
    for name in parsed.sources:
        if not _SOURCE_NAME.match(name):
            raise ConfigError(
                f"SOURCES_FILE {path}: sources.{name}: a source name is lowercase letters, digits,"
                " '-' and '_' (at most 63), starting with a letter or digit"
            )
    return parsed


def _source_from_file(path: Path, name: str, spec: _SourceFile, settings: Settings) -> Source:
    inline: list[Key] = []
    for index, key in enumerate(spec.secrets):
        try:
            inline.append(Key(key.id, decode_secret(spec.scheme, key.value)))
        except ValueError as error:
            raise ConfigError(
                f"SOURCES_FILE {path}: sources.{name}.secrets.{index}.value: {error}"
            ) from None
    source = Source(
        name=name,
        scheme=spec.scheme,
        tolerance_seconds=spec.toleranceSeconds or settings.signature_tolerance_seconds,
        rate_limit=(
            RateLimit(spec.rateLimit.perSecond, spec.rateLimit.burst) if spec.rateLimit else None
        ),
        inline_keys=tuple(inline),
        secrets_dir=spec.secretsDir,
        shipment_namespace=spec.shipmentNamespace or name,
    )
    if spec.secretsDir is not None:
        if not spec.secretsDir.is_dir():
            raise ConfigError(
                f"SOURCES_FILE {path}: sources.{name}.secretsDir:"
                f" {spec.secretsDir} is not a directory"
            )
        dir_keys, problems = read_key_dir(spec.secretsDir, spec.scheme)
        if problems:
            raise ConfigError(f"SOURCES_FILE {path}: sources.{name}.secretsDir: {problems[0]}")
        source.keys = _merge(source.inline_keys, dir_keys)
    else:
        source.keys = source.inline_keys
    if not source.keys:
        raise ConfigError(f"SOURCES_FILE {path}: sources.{name}: no signing key found")
    return source


def read_key_dir(directory: Path, scheme: Scheme) -> tuple[tuple[Key, ...], list[str]]:
    """Read every key file of a directory; return the keys and a description of each bad file.

    Hidden entries are skipped: Kubernetes keeps its ``..data`` bookkeeping links there.
    """
    keys: list[Key] = []
    problems: list[str] = []
    try:
        entries = sorted(directory.iterdir())
    except OSError as error:
        return (), [f"{directory}: cannot be listed ({error.strerror})"]
    for entry in entries:
        if entry.name.startswith(".") or not entry.is_file():
            continue
        if not _KEY_ID_RE.match(entry.name):
            problems.append(
                f"{entry}: a key file name is the key id (letters, digits, '.', '_', '-')"
            )
            continue
        try:
            keys.append(Key(entry.name, decode_secret(scheme, entry.read_text(encoding="utf-8"))))
        except (OSError, UnicodeDecodeError, ValueError) as error:
            problems.append(f"{entry}: {error}")
    return tuple(keys), problems


def _merge(inline: tuple[Key, ...], from_dir: tuple[Key, ...]) -> tuple[Key, ...]:
    seen = {key.id for key in inline}
    return inline + tuple(key for key in from_dir if key.id not in seen)


def load_sources(settings: Settings) -> dict[str, Source]:
    """Build every source from ``SIGNING_SECRET`` and ``SOURCES_FILE``, or raise ConfigError."""
    sources: dict[str, Source] = {}
    if settings.sources_file is not None:
        parsed = _read_sources_file(settings.sources_file)
        for name, spec in parsed.sources.items():
            sources[name] = _source_from_file(settings.sources_file, name, spec, settings)
    if settings.signing_secret is not None:
        if DEFAULT_SOURCE in sources:
            raise ConfigError(
                f"SIGNING_SECRET: source '{DEFAULT_SOURCE}' is also defined in SOURCES_FILE"
                f" {settings.sources_file}; configure it in one place"
            )
        key = Key("default", settings.signing_secret.get_secret_value().encode())
        sources[DEFAULT_SOURCE] = Source(
            name=DEFAULT_SOURCE,
            scheme=Scheme.V1,
            tolerance_seconds=settings.signature_tolerance_seconds,
            rate_limit=None,
            inline_keys=(key,),
            secrets_dir=None,
            keys=(key,),
        )
    if not sources:
        raise ConfigError("SIGNING_SECRET: is required (or define sources in SOURCES_FILE)")
    return sources


class KeyRing:
    """The sources with their live keys; :meth:`reload` refreshes keys read from directories.

    Lookups are plain dict reads on the request path; reloads swap a source's key tuple in one
    assignment, so a request sees either the old set or the new one, never a partial set.
    """

    def __init__(self, sources: dict[str, Source]) -> None:
        self._sources = sources
        self._problems: dict[str, tuple[str, ...]] = {}

    def get(self, name: str) -> Source | None:
        """The source called ``name``, or ``None``."""
        return self._sources.get(name)

    def names(self) -> list[str]:
        """The configured source names, sorted."""
        return sorted(self._sources)

    def reload(self) -> bool:
        """Re-read key directories; return whether any source's keys changed."""
        changed = False
        for source in self._sources.values():
            if source.secrets_dir is None:
                continue
            from_dir, problems = read_key_dir(source.secrets_dir, source.scheme)
            if tuple(problems) != self._problems.get(source.name, ()):
                for problem in problems:
                    log.warning(
                        "skipping a signing key file",
                        extra={"source": source.name, "problem": problem},
                    )
                self._problems[source.name] = tuple(problems)
            keys = _merge(source.inline_keys, from_dir)
            if keys != source.keys:
                log.info(
                    "signing keys reloaded",
                    extra={"source": source.name, "keyIds": [key.id for key in keys]},
                )
                source.keys = keys
                changed = True
        return changed
