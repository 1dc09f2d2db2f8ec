"""Secrets: the configured text of each key, and the key bytes each check derives from it.

A source's keys are configured as text (inline or one file per key, for rotation). What the
bytes are depends on the provider: EasyPost's HMAC key is the NFKD-normalised secret, Standard
Webhooks secrets are ``whsec_`` + base64, most others are the text as UTF-8. Each check declares
its :class:`~courier_gateway.adapters.model.KeySpec`, so one source can hold, say, Shippo's HMAC
secret and its URL token side by side; a key that does not decode for a check is not tried there.
"""

from __future__ import annotations

import base64
import binascii
import unicodedata
from dataclasses import dataclass, field

from courier_gateway.adapters.model import KeySpec

__all__ = ["Secret", "decode_key"]


@dataclass(frozen=True, slots=True)
class Secret:
    """One active key of a source: its id and either its text or its already-decoded bytes."""

    id: str
    text: str | None = field(default=None, repr=False)
    material: bytes | None = field(default=None, repr=False)

    def for_check(self, spec: KeySpec) -> bytes | None:
        """The key bytes under ``spec``, or ``None`` when this key does not decode that way."""
        if self.material is not None:
            return self.material
        assert self.text is not None
        try:
            return decode_key(spec, self.text)
        except ValueError:
            return None


def decode_key(spec: KeySpec, text: str) -> bytes:
    """Turn configured text into key bytes; ValueError says what is wrong (never the value)."""
    value = text.strip()
    if spec.encoding == "whsec":
        if not value.startswith("whsec_"):
            raise ValueError(f"{spec.label} must start with 'whsec_'")
        raw = _base64(value.removeprefix("whsec_"), "the part after 'whsec_'")
        if len(raw) < spec.minLength:
            raise ValueError(f"the decoded key must be at least {spec.minLength} bytes")
        return raw
    if spec.encoding == "base64":
        raw = _base64(value, spec.label)
    elif spec.encoding == "hex":
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ValueError(f"{spec.label} is not valid hex") from None
    else:
        if len(value) < spec.minLength:
            raise ValueError(f"{spec.label} must be at least {spec.minLength} characters")
        if spec.encoding == "nfkd":
            value = unicodedata.normalize("NFKD", value)
        return value.encode()
    if len(raw) < spec.minLength:
        raise ValueError(f"{spec.label} must decode to at least {spec.minLength} bytes")
    return raw


def _base64(value: str, what: str) -> bytes:
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{what} is not valid base64") from None
