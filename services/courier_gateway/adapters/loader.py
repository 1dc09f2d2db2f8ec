"""Loading adapters: the built-in ones shipped with the package, and custom ones from ADAPTERS_DIR.

A custom file with the name of a built-in adapter replaces it (how a built-in's status map is
extended without waiting for a release), and ``extends: NAME`` starts from another adapter's
document: objects are merged key by key, everything else is replaced. At start-up any broken
file stops the process with a message naming the file and the field; at run time
(:meth:`AdapterRegistry.reload`) a broken file is reported and the adapter keeps its last good
version, so a typo in a ConfigMap never takes a working source down.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from courier_gateway.adapters.adapter import Adapter, AdapterError
from courier_gateway.adapters.model import AdapterDocument

__all__ = ["AdapterRegistry", "builtin_registry", "load_adapter_file", "load_registry"]

log = logging.getLogger(__name__)

_SUFFIXES = (".yaml", ".yml")
# libyaml's safe loader when PyYAML was built with it: every ingress process loads the adapters.
_LOADER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


@dataclass(frozen=True, slots=True)
class _Raw:
    name: str
    origin: str
    document: dict[str, Any]


def _read(text: str, origin: str) -> dict[str, Any]:
    try:
        document = yaml.load(text, Loader=_LOADER)  # noqa: S506 - a safe loader, in C if built
    except yaml.YAMLError as error:
        reason = str(error).splitlines()[0]
        mark = getattr(error, "problem_mark", None)
        if mark is not None:
            reason += f" at line {mark.line + 1}, column {mark.column + 1}"
        raise AdapterError(f"{origin}: not valid YAML ({reason})") from None
    if not isinstance(document, dict):
        raise AdapterError(f"{origin}: must be a YAML mapping (one adapter per file)")
    name = document.get("name")
    if not isinstance(name, str):
        raise AdapterError(f"{origin}: name: is required")
    return document


def _builtin_raw() -> list[_Raw]:
    folder = resources.files("courier_gateway.adapters").joinpath("builtin")
    found: list[_Raw] = []
    for entry in sorted(folder.iterdir(), key=lambda item: item.name):
        if entry.name.endswith(_SUFFIXES):
            origin = f"built-in adapter {entry.name}"
            document = _read(entry.read_text(encoding="utf-8"), origin)
            found.append(_Raw(str(document["name"]), origin, document))
    return found


def _directory_files(directory: Path) -> list[Path]:
    # Hidden entries are Kubernetes' ..data bookkeeping links of a mounted ConfigMap.
    return sorted(
        entry
        for entry in directory.iterdir()
        if entry.name.endswith(_SUFFIXES) and not entry.name.startswith(".") and entry.is_file()
    )


def _directory_raw(directory: Path) -> list[_Raw]:
    found: list[_Raw] = []
    try:
        files = _directory_files(directory)
    except OSError as error:
        raise AdapterError(
            f"ADAPTERS_DIR {directory}: cannot be listed ({error.strerror})"
        ) from None
    for path in files:
        origin = f"ADAPTERS_DIR {path}"
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AdapterError(f"{origin}: cannot be read ({error})") from None
        document = _read(text, origin)
        found.append(_Raw(str(document["name"]), origin, document))
    return found


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _resolve(
    raw: _Raw, known: dict[str, _Raw], parents: dict[str, _Raw], seen: tuple[_Raw, ...] = ()
) -> dict[str, Any]:
    document = dict(raw.document)
    parent_name = document.pop("extends", None)
    if parent_name is None:
        return document
    if not isinstance(parent_name, str):
        raise AdapterError(f"{raw.origin}: extends: must be an adapter name")
    # A file that replaces a built-in may extend that same built-in.
    parent = parents.get(parent_name) if parent_name == raw.name else known.get(parent_name)
    if parent is None:
        raise AdapterError(f"{raw.origin}: extends: no adapter named {parent_name!r}")
    chain = (*seen, raw)
    if parent in chain:
        names = " -> ".join(item.name for item in (*chain, parent))
        raise AdapterError(f"{raw.origin}: extends: a cycle ({names})")
    return _merge(_resolve(parent, known, parents, chain), document)


def _build(raw: _Raw, document: dict[str, Any]) -> Adapter:
    # Imported here: the configuration package imports the adapters (sources use them).
    from courier_gateway.config._errors import describe_validation_error

    try:
        parsed = AdapterDocument.model_validate(document)
    except ValidationError as error:
        raise AdapterError(f"{raw.origin}: {describe_validation_error(error)}") from None
    return Adapter(parsed, origin=raw.origin)


def _known(builtin: list[_Raw], custom: list[_Raw]) -> dict[str, _Raw]:
    known = {raw.name: raw for raw in builtin}
    for raw in custom:
        if raw.name in known and known[raw.name] in custom:
            raise AdapterError(
                f"{raw.origin}: name: {raw.name!r} is also defined in {known[raw.name].origin}"
            )
        known[raw.name] = raw
    return known


def _build_all(builtin: list[_Raw], known: dict[str, _Raw]) -> dict[str, Adapter]:
    parents = {raw.name: raw for raw in builtin}
    return {name: _build(raw, _resolve(raw, known, parents)) for name, raw in known.items()}


class AdapterRegistry:
    """Every adapter by name; :meth:`reload` picks up changed files in ADAPTERS_DIR."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory
        self._builtin = _builtin_raw()
        self._known = _known(self._builtin, self._custom())
        self._adapters = _build_all(self._builtin, self._known)
        self._snapshot = self._stat()
        self._problem: str | None = None

    def _custom(self) -> list[_Raw]:
        if self.directory is None:
            return []
        if not self.directory.is_dir():
            raise AdapterError(f"ADAPTERS_DIR {self.directory}: is not a directory")
        return _directory_raw(self.directory)

    def _stat(self) -> tuple[tuple[str, int, int], ...]:
        if self.directory is None:
            return ()
        try:
            files = _directory_files(self.directory)
            return tuple(
                (path.name, path.stat().st_mtime_ns, path.stat().st_size) for path in files
            )
        except OSError:
            return ()

    def get(self, name: str) -> Adapter | None:
        """The adapter called ``name``, or ``None``."""
        return self._adapters.get(name)

    def names(self) -> list[str]:
        """Every adapter name, sorted."""
        return sorted(self._adapters)

    def __iter__(self) -> Iterator[Adapter]:
        return iter(self._adapters[name] for name in self.names())

    def builtin_names(self) -> set[str]:
        """Names of the adapters shipped with the package."""
        return {raw.name for raw in self._builtin}

    def reload(self) -> bool:
        """Re-read ADAPTERS_DIR when a file changed; keep everything on error. True if changed."""
        snapshot = self._stat()
        if snapshot == self._snapshot:
            return False
        self._snapshot = snapshot
        try:
            known = _known(self._builtin, self._custom())
            adapters = _build_all(self._builtin, known)
        except AdapterError as error:
            if str(error) != self._problem:
                log.warning("adapters not reloaded", extra={"problem": str(error)})
                self._problem = str(error)
            return False
        self._problem = None
        self._known = known
        changed = [
            name
            for name, adapter in adapters.items()
            if name not in self._adapters or adapter.document != self._adapters[name].document
        ]
        self._adapters = adapters
        log.info("adapters reloaded", extra={"changed": changed})
        return bool(changed)

    def build_file(self, path: Path) -> Adapter:
        """An adapter from a file that is not (yet) in ADAPTERS_DIR, extending known ones."""
        origin = str(path)
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as error:
            raise AdapterError(f"{origin}: cannot be read ({error})") from None
        document = _read(text, origin)
        raw = _Raw(str(document["name"]), origin, document)
        parents = {item.name: item for item in self._builtin}
        return _build(raw, _resolve(raw, self._known, parents))


def load_adapter_file(path: Path, registry: AdapterRegistry) -> Adapter:
    """Build the adapter in ``path`` (its ``extends`` resolved against ``registry``)."""
    return registry.build_file(path)


def load_registry(directory: Path | None) -> AdapterRegistry:
    """Built-in adapters plus those in ``directory``; raise AdapterError naming a bad file."""
    return AdapterRegistry(directory)


_BUILTIN: AdapterRegistry | None = None


def builtin_registry() -> AdapterRegistry:
    """The built-in adapters alone (built once per process)."""
    global _BUILTIN  # noqa: PLW0603 - a process-wide cache of immutable adapters
    if _BUILTIN is None:
        _BUILTIN = AdapterRegistry(None)
    return _BUILTIN
