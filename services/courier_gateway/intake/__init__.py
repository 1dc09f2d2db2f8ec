"""The ingress: ``POST /v1/events/{source}`` verified, validated and durably enqueued.

:func:`create_app` builds the Sanic application (one per process); :func:`serve` runs it with
one or several worker processes.
"""

from courier_gateway.intake.app import create_app, serve

__all__ = ["create_app", "serve"]
