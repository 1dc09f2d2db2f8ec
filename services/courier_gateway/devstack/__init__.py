"""The local stack behind ``make dev``: private Redis, embedded store, ingress and worker.

With ``REDIS_URL`` and ``MONGO_URI`` unset it starts a private ``redis-server`` and an nx-27017
store (a MongoDB wire-protocol server on SQLite) on free ports with their data under ``.data/``;
set either variable to use your own (it is probed first). One stack per data directory
(``lock.py``). Once ready it writes ``.data/env`` (``envfile.py``) and prints the API URL, the
signing secret and a signed ``curl`` that works as printed; Ctrl-C or SIGTERM stops every child,
at any stage.

Nothing heavy is imported here: ``courier-gateway dev`` takes the lock before loading the stack
(``stack.py``), and the operator commands read ``.data/env`` without loading it either.
"""
