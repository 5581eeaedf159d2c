"""Which filesystem a path is on: refusing a network filesystem for kmflow's SQLite state.

The `local` backend, and `delta` on a local directory, keep their SQLite databases (the
metadata index, the Idempotency-Key claims) in `STATE_PATH`, in WAL mode, with `flock` write
locks. SQLite's own documentation says this does not belong on a network filesystem:
"SQLite Over a Network, Caveats and Considerations" (https://www.sqlite.org/useovernet.html)
explains that the locking a network filesystem offers is imperfect, so corruption is possible
and early testing success proves nothing, and "Write-Ahead Logging"
(https://www.sqlite.org/wal.html) that WAL needs shared memory and so does not work over a
network filesystem at all. A `STATE_PATH` on NFS or SMB also suggests the setup kmflow must
not have: several machines sharing one state. One process cannot see the other machines, but it
can see the filesystem type of its own mount, and that is what this module reports.

How: the mount a path is on is the entry of `/proc/self/mountinfo` whose mount point is the
longest prefix, component by component, of the resolved path (a later entry on the same mount
point hides an earlier one); its filesystem type is compared with `NETWORK_FILESYSTEMS`. The
list names filesystems that reach other machines; host-to-guest shares of one machine (9p,
virtiofs) are not on it. Where there is no `/proc/self/mountinfo` (not Linux) nothing can be
told and nothing is refused.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

MOUNTINFO = Path("/proc/self/mountinfo")

NETWORK_FILESYSTEMS = frozenset(
    {
        # NFS (AWS EFS, Google Filestore, Azure Files NFS, NAS exports) and SMB/CIFS.
        "nfs", "nfs4", "cifs", "smb3", "smbfs",
        # Other network and cluster filesystems.
        "afs", "coda", "ncpfs", "ceph", "lustre", "gpfs", "beegfs", "glusterfs", "ocfs2",
        "gfs2", "orangefs",
        # FUSE clients of remote storage (type "fuse.<program>").
        "fuse.sshfs", "fuse.s3fs", "fuse.gcsfuse", "fuse.goofys", "fuse.mountpoint-s3",
        "fuse.blobfuse", "fuse.blobfuse2", "fuse.rclone", "fuse.juicefs", "fuse.glusterfs",
        "fuse.ceph-fuse", "fuse.cephfs",
    }
)  # fmt: skip

_ESCAPE = re.compile(r"\\([0-7]{3})")


@dataclass(frozen=True)
class Mount:
    """One line of mountinfo: where, which filesystem type, from what source."""

    mount_point: PurePosixPath
    fs_type: str
    source: str

    @property
    def is_network(self) -> bool:
        return self.fs_type in NETWORK_FILESYSTEMS


def parse_mountinfo(text: str) -> list[Mount]:
    """The mounts of a mountinfo text, in its order; lines that do not parse are skipped.

    A line (proc(5)): `ID PARENT MAJOR:MINOR ROOT MOUNT_POINT OPTIONS [OPTIONAL...] - TYPE
    SOURCE SUPER_OPTIONS`, with zero or more optional fields ended by a lone `-`, and space,
    tab, newline and backslash in paths written as octal escapes (`\\040`).
    """
    mounts = []
    for line in text.splitlines():
        fields = line.split(" ")
        try:
            separator = fields.index("-", 6)
            fs_type, source = fields[separator + 1], fields[separator + 2]
        except (ValueError, IndexError):
            continue
        mount_point = _unescape(fields[4])
        if not mount_point.startswith("/"):
            continue
        mounts.append(Mount(PurePosixPath(mount_point), fs_type, _unescape(source)))
    return mounts


def mount_of(path: PurePosixPath, mounts: Iterable[Mount]) -> Mount | None:
    """The mount an absolute, resolved `path` is on: the longest mount point that is `path` or
    one of its parents; of several entries on that mount point, the last (the one on top)."""
    covering = [m for m in mounts if m.mount_point == path or m.mount_point in path.parents]
    # max() keeps the first of equals: reversed, that is the last entry on a mount point.
    return max(reversed(covering), key=lambda mount: len(mount.mount_point.parts), default=None)


def network_mount(path: Path, mountinfo: str | None = None) -> Mount | None:
    """The network filesystem `path` is (or would be created) on, or None: a local one, or
    unknown. `mountinfo` defaults to this process's `/proc/self/mountinfo`."""
    if mountinfo is None:
        try:
            mountinfo = MOUNTINFO.read_text(encoding="utf-8", errors="surrogateescape")
        except OSError:
            return None
    # Symlinks resolved as far as the path exists; the rest will be created on the same mount.
    resolved = PurePosixPath(os.path.realpath(path))
    mount = mount_of(resolved, parse_mountinfo(mountinfo))
    return mount if mount is not None and mount.is_network else None


def _unescape(field: str) -> str:
    return _ESCAPE.sub(lambda match: chr(int(match.group(1), 8)), field)
