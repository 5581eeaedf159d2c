"""`python -m app.cli`: the `kmflow` command, for a checkout without the entry point."""

import sys

from app.cli import main

sys.exit(main())
