"""The local stack behind ``make dev``: private Redis, embedded store, ingress and worker.

With ``REDIS_URL`` and ``MONGO_URI`` unset it starts a private ``redis-server`` and an nx-27017
store (a MongoDB wire-protocol server on SQLite) on free ports with their data under ``.data/``;
set either variable to use your own. It prints the API URL, the signing secret and a signed
``curl`` that works as printed, and stops every child on Ctrl-C or SIGTERM.
"""

from courier_gateway.devstack.stack import run

__all__ = ["run"]
