"""Which filesystem STATE_PATH is on, from mountinfo text (there is no NFS on this machine: the
parsing and the choice of mount are what can be tested here), and the refusal it leads to."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import pytest

from app.config import ConfigError
from app.settings import load_settings
from app.storage import filesystems
from app.storage.filesystems import Mount, mount_of, network_mount, parse_mountinfo

# Shaped like a Kubernetes pod's: an overlay root, an EFS claim (NFS 4.1) on /data, an Azure
# Files share (CIFS) on /share, an sshfs mount whose name holds a space, optional fields
# (none, one, two) before the "-" separator.
MOUNTINFO = """\
1720 1544 0:391 / / rw,relatime master:512 - overlay overlay rw,lowerdir=/l,upperdir=/u,workdir=/w
1721 1720 0:393 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
1730 1720 0:60 / /data rw,relatime shared:7 master:3 - nfs4 fs-0a1b.efs.amazonaws.com:/ rw,vers=4.1
1731 1720 259:1 /pods/x/volumes/empty-dir/tmp /tmp rw,relatime - ext4 /dev/nvme0n1 rw
1732 1720 0:70 / /share rw,relatime - cifs //acct.file.core.windows.net/kmflow rw,vers=3.1.1
1733 1720 0:71 / /mnt/remote\\040box rw,nosuid - fuse.sshfs me@box:/srv rw,user_id=0
1734 1730 259:1 /pods/x/volumes/empty-dir/s /data/kmflow_state rw - ext4 /dev/nvme0n1 rw
"""


def test_mountinfo_lines_are_parsed_with_and_without_optional_fields() -> None:
    mounts = parse_mountinfo(MOUNTINFO)

    assert [(str(m.mount_point), m.fs_type) for m in mounts] == [
        ("/", "overlay"),
        ("/proc", "proc"),
        ("/data", "nfs4"),
        ("/tmp", "ext4"),
        ("/share", "cifs"),
        ("/mnt/remote box", "fuse.sshfs"),  # \040 is a space
        ("/data/kmflow_state", "ext4"),
    ]
    assert mounts[2].source == "fs-0a1b.efs.amazonaws.com:/"
    assert [m.is_network for m in mounts] == [False, False, True, False, True, True, False]


def test_lines_that_do_not_parse_are_skipped() -> None:
    text = "\n".join(
        [
            "",
            "garbage",
            "36 35 98:0 /mnt1 /mnt2 rw,noatime master:1 ext3 /dev/root rw",  # no separator
            "36 35 98:0 /mnt1 relative rw - nfs server:/x rw",  # not an absolute mount point
            "36 35 98:0 /mnt1 /mnt2 rw -",  # nothing after the separator
            "36 35 98:0 /mnt1 /ok rw - nfs server:/x rw",
        ]
    )
    assert parse_mountinfo(text) == [Mount(PurePosixPath("/ok"), "nfs", "server:/x")]


@pytest.mark.parametrize(
    ("path", "mount_point", "fs_type"),
    [
        ("/data/evidence_store", "/data", "nfs4"),  # the longest prefix, not the root
        ("/data", "/data", "nfs4"),  # the mount point itself
        ("/database/x", "/", "overlay"),  # a prefix by components, not by characters
        ("/data/kmflow_state/staging", "/data/kmflow_state", "ext4"),  # nested below /data
        ("/mnt/remote box/state", "/mnt/remote box", "fuse.sshfs"),
        ("/srv/state", "/", "overlay"),
    ],
)
def test_a_path_is_on_the_longest_mount_point_above_it(
    path: str, mount_point: str, fs_type: str
) -> None:
    mount = mount_of(PurePosixPath(path), parse_mountinfo(MOUNTINFO))
    assert mount is not None
    assert (str(mount.mount_point), mount.fs_type) == (mount_point, fs_type)


def test_of_two_mounts_on_one_point_the_later_one_is_on_top() -> None:
    stacked = (
        "1 0 8:1 / / rw - ext4 /dev/sda1 rw\n"
        "2 1 0:50 / /data rw - nfs4 server:/export rw\n"
        "3 1 8:2 / /data rw - xfs /dev/sdb1 rw\n"
    )
    assert network_mount(Path("/data/state"), stacked) is None
    reordered = "\n".join(stacked.splitlines()[::2] + stacked.splitlines()[1:2])
    mount = network_mount(Path("/data/state"), reordered)
    assert mount is not None and mount.fs_type == "nfs4"


def test_network_mount_resolves_symlinks_first(tmp_path: Path) -> None:
    """A symlink on a local disk that points into a share is the share."""
    share = tmp_path / "share"
    share.mkdir()
    (tmp_path / "link").symlink_to(share)
    mountinfo = f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:50 / {share} rw - nfs server:/e rw\n"

    mount = network_mount(tmp_path / "link" / "kmflow_state", mountinfo)

    assert mount is not None and mount.mount_point == PurePosixPath(share)
    assert network_mount(tmp_path / "elsewhere", mountinfo) is None


def test_this_machines_own_mountinfo_is_read() -> None:
    """Not vacuous here: the real file parses, and the test's directory is on a mount."""
    if not filesystems.MOUNTINFO.exists():
        pytest.skip("no /proc/self/mountinfo (not Linux)")
    mounts = parse_mountinfo(filesystems.MOUNTINFO.read_text(encoding="utf-8"))
    assert PurePosixPath("/") in {mount.mount_point for mount in mounts}
    assert mount_of(PurePosixPath(Path.cwd().resolve()), mounts) is not None


def test_without_mountinfo_nothing_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr(filesystems, "MOUNTINFO", tmp_path / "absent")
    assert network_mount(tmp_path) is None


@pytest.fixture
def nfs_share(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """A directory this process's mountinfo (faked) shows as an NFS mount."""
    for name in ("STORAGE_BACKEND", "STATE_PATH", "DELTA_BASE_PATH", "API_KEYS", "API_HOST"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # no stray .env
    share = tmp_path / "share"
    share.mkdir()
    fake = tmp_path / "mountinfo"
    fake.write_text(
        f"1 0 8:1 / / rw - ext4 /dev/sda1 rw\n2 1 0:50 / {share} rw - nfs4 nas:/export rw\n",
        encoding="utf-8",
    )
    monkeypatch.setattr(filesystems, "MOUNTINFO", fake)
    return share


@pytest.mark.parametrize(
    ("backend", "delta_base"),
    [("local", None), ("delta", "delta_store"), ("delta", "file:///srv/delta")],
)
def test_sqlite_state_on_a_network_filesystem_is_refused(
    nfs_share: Path, backend: str, delta_base: str | None
) -> None:
    overrides: dict[str, object] = {
        "storage_backend": backend,
        "state_path": nfs_share / "kmflow_state",
    }
    if delta_base is not None:
        overrides["delta_base_path"] = delta_base

    with pytest.raises(ConfigError) as raised:
        load_settings(**overrides)

    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"invalid configuration: STATE_PATH={nfs_share / 'kmflow_state'}")
    assert f"nfs4 mounted at {nfs_share}" in message
    assert "put STATE_PATH on a local disk" in message
    # Off the share, the same settings are fine.
    load_settings(**{**overrides, "state_path": nfs_share.parent / "kmflow_state"})


@pytest.mark.parametrize(
    ("backend", "delta_base"), [("databricks", None), ("delta", "s3://bucket/kmflow")]
)
def test_scratch_state_may_be_on_a_network_filesystem(
    nfs_share: Path, backend: str, delta_base: str | None
) -> None:
    """Databricks and delta on S3 keep nothing that must last in STATE_PATH."""
    overrides: dict[str, object] = {
        "storage_backend": backend,
        "state_path": nfs_share / "kmflow_state",
    }
    if delta_base is not None:
        overrides["delta_base_path"] = delta_base

    settings = load_settings(**overrides)

    assert settings.state_path_is_scratch
    assert network_mount(settings.state_path) is not None  # the share was seen, and allowed
