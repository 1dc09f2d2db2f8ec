"""Courier Gateway: signed courier webhooks in, exactly-once shipment updates out.

The package reads like the data flow of the design (``docs/architecture.md``):

- :mod:`courier_gateway.config`: settings and the per-source signing configuration;
- :mod:`courier_gateway.intake`: the Sanic ingress that verifies, validates and enqueues;
- :mod:`courier_gateway.queue`: the Redis stream shared with the worker, and its message format;
- :mod:`courier_gateway.observability`: JSON logs and trace context;
- :mod:`courier_gateway.devstack`: the local stack behind ``make dev``;
- :mod:`courier_gateway.cli`: the ``courier-gateway`` command that runs every role.
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
