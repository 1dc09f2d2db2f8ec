"""Allow ``python -m courier_gateway``."""

from courier_gateway.cli import main

raise SystemExit(main())
