"""The run's scratch space: every measurement writes into a directory that did not exist
before, and nothing is deleted until the whole run is over.

Why: on these machines' journal-less filesystem, creating files right after deleting many is
slowed for minutes (inode reuse). Removing one round's files before the next would make the
later rounds slower than the first for reasons that have nothing to do with the target.
"""

from __future__ import annotations

import itertools
import shutil
import tempfile
from pathlib import Path

# On disk (not a tmpfs), where the stores under test live; runs get a mkdtemp directory.
DEFAULT_PARENT = Path("/var/tmp")  # noqa: S108


class Workdir:
    def __init__(self, root: Path | None = None) -> None:
        if root is None:
            DEFAULT_PARENT.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="kmflow-bench-", dir=DEFAULT_PARENT))
        else:
            root.mkdir(parents=True, exist_ok=True)
            root = Path(tempfile.mkdtemp(prefix="run-", dir=root))
        self.root = root.resolve()
        self._counter = itertools.count(1)
        self.logs = self.fresh("logs")

    def fresh(self, name: str) -> Path:
        """A new, empty directory whose name no earlier call has used in this run."""
        path = self.root / f"{next(self._counter):03d}-{name}"
        path.mkdir()
        return path

    def cleanup(self) -> None:
        """Only at the very end of a run (see the module docstring)."""
        shutil.rmtree(self.root, ignore_errors=True)
