"""The ingress: ``POST /v1/events/{source}`` verified, validated and durably enqueued.

:func:`create_app` builds the Sanic application (one per process); :func:`serve` runs one server
process, and :class:`~courier_gateway.intake.supervisor.Supervisor` several on one port.

The application module is imported on first use, not with the package: the supervisor of
several server processes lives here too and never needs Sanic (about 40 MB less).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from courier_gateway.intake.app import create_app, serve

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from courier_gateway.intake import app

        return getattr(app, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
