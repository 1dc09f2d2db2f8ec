"""Adapters: receive the real webhooks of carriers and aggregators, declared per provider in YAML.

An adapter says how a provider's request is verified (HMAC over a template of parts, a plain
hash, a static token, a source address), how one POST splits into items, how each item maps to
the canonical event (JMESPath expressions, time formats, a status map) and what the provider
expects in return. The flow: :meth:`Adapter.verify` on the raw bytes, then
:meth:`Adapter.map_body`. docs/adapters.md explains how to write one.
"""

from courier_gateway.adapters.adapter import Adapter, AdapterError
from courier_gateway.adapters.keys import Secret
from courier_gateway.adapters.loader import (
    AdapterRegistry,
    builtin_registry,
    load_adapter_file,
    load_registry,
)
from courier_gateway.adapters.mapping import Ignored, Mapped, Mapping, PayloadError, Unmapped
from courier_gateway.adapters.verification import Inbound, VerificationError

__all__ = [
    "Adapter",
    "AdapterError",
    "AdapterRegistry",
    "Ignored",
    "Inbound",
    "Mapped",
    "Mapping",
    "PayloadError",
    "Secret",
    "Unmapped",
    "VerificationError",
    "builtin_registry",
    "load_adapter_file",
    "load_registry",
]
