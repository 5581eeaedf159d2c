"""`python -m benchmarks [--quick] [--only ...]`: see benchmarks/cli.py and the README."""

from benchmarks.cli import main

raise SystemExit(main())
