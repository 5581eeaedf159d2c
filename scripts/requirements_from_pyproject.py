#!/usr/bin/env python3
"""Print kmflow's requirements from pyproject.toml, one per line: the core dependencies and
those of each extra named in a comma-separated list (for example `delta,databricks`).

The Dockerfile installs these in a layer of their own, before the code is copied, so a change
to `app/` reuses the cached dependency layer:

    python requirements_from_pyproject.py delta,databricks > requirements.txt

With `--floor NAME` it prints `NAME==X` for the `NAME>=X` that pyproject.toml declares: the
oldest version kmflow allows, which `scripts/test` tests too.
"""

from __future__ import annotations

import re
import sys
import tomllib
from pathlib import Path


def requirements(pyproject: Path, extras: str) -> list[str]:
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    optional: dict[str, list[str]] = project.get("optional-dependencies", {})
    found = list(project.get("dependencies", []))
    for extra in (name.strip() for name in extras.split(",")):
        if not extra:
            continue
        if extra not in optional:
            raise SystemExit(f"unknown extra {extra!r}; pyproject.toml has {sorted(optional)}")
        found += optional[extra]
    return list(dict.fromkeys(found))


def floor(pyproject: Path, name: str) -> str:
    """`name==X` for the `name>=X` among every requirement of pyproject.toml."""
    project = tomllib.loads(pyproject.read_text(encoding="utf-8"))["project"]
    every = list(project.get("dependencies", []))
    for extra in project.get("optional-dependencies", {}).values():
        every += extra
    for requirement in every:
        if match := re.fullmatch(rf"{re.escape(name)}\s*>=\s*([\w.]+)", requirement.strip()):
            return f"{name}=={match[1]}"
    raise SystemExit(f"pyproject.toml has no {name}>=X requirement")


if __name__ == "__main__":
    if len(sys.argv) > 2 and sys.argv[1] == "--floor":
        print(floor(Path("pyproject.toml"), sys.argv[2]))
    else:
        extras = sys.argv[1] if len(sys.argv) > 1 else ""
        pyproject = Path(sys.argv[2]) if len(sys.argv) > 2 else Path("pyproject.toml")
        print("\n".join(requirements(pyproject, extras)))
