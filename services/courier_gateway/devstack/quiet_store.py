"""Run the embedded store (nx-27017) without its per-command log lines.

nx-27017 logs every command at INFO, including the ingress's once-a-second ``ping`` and a
warning for each aggregation it cannot push down to SQLite: hundreds of kilobytes an hour of
nothing. Here only its warnings (and its driver's errors) are kept; its arguments are nx-27017's.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["main"]


def main() -> int:
    """Start nx-27017's own command line with quieter loggers."""
    logging.getLogger("nx_27017").setLevel(logging.WARNING)
    # The SQLite layer warns about every aggregation it falls back on: expected, not news.
    logging.getLogger("neosqlite").setLevel(logging.ERROR)
    from nx_27017.nx_27017 import main as store_main

    sys.argv[0] = "nx-27017"
    result = store_main()
    return int(result or 0)


if __name__ == "__main__":
    raise SystemExit(main())
