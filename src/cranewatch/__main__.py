"""Allow ``python -m cranewatch``."""

from cranewatch.cli import main

raise SystemExit(main())
