"""Checks made before anything starts, so a run fails in its first second with a message
that says what to do, not twenty minutes in with a traceback."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmarks.options import Options

TOOLS = {
    "nginx": "apt-get install nginx",
    "wrk": "apt-get install wrk",
    "curl": "apt-get install curl",
    "dd": "coreutils",
}
NGINX = "/usr/sbin/nginx"  # not on a normal user's PATH on Debian
HEADROOM_BYTES = 2 * 1024**3


def disk_needed(options: Options) -> int:
    """Bytes the scenarios leave in the scratch space at most (nothing is deleted before the
    end): per large-upload round one copy for each of the five targets, the source files,
    kmflow's copy of the big file, and the download scenario's file and its stored copy."""
    sizes = options.sizes
    needed = 0
    if "large_upload" in options.scenarios:
        needed += sizes.large_bytes * (1 + 5 * options.rounds) + 2 * (sizes.big_bytes or 0)
    if "download" in options.scenarios:
        needed += 2 * sizes.large_bytes
    return needed


def problems(options: Options, scratch_parent: Path) -> list[str]:
    found = []
    for tool, hint in TOOLS.items():
        if shutil.which(tool) is None and not (tool == "nginx" and os.access(NGINX, os.X_OK)):
            found.append(f"{tool} is not installed ({hint}; scripts/bench installs it)")
    existing = next(path for path in (scratch_parent, *scratch_parent.parents) if path.exists())
    free = shutil.disk_usage(existing).free
    needed = disk_needed(options) + HEADROOM_BYTES
    if free < needed:
        found.append(
            f"{scratch_parent} has {free / 1024**3:.1f} GiB free, the run needs about "
            f"{needed / 1024**3:.1f} GiB: free some, pass --workdir elsewhere, or use "
            "--skip-big / --size-mib / --rounds"
        )
    return found
