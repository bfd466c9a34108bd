"""Whether every node of a cluster can read a run's paths.

An ``s3://`` URI reads the same from every node. A local path names a file on the machine that
reads it: on a one-node cluster that is the driver's machine too, on a multi-node cluster each
node would look in its own disk and find nothing, or another file of the same name. So a local
input or output path on a cluster of more than one node (or behind a Ray Client ``ray://``
address, where the driver is not on the cluster at all) is refused before any work, unless it is
*shared*:

- it lies on a network filesystem, by the type of the mount that holds it (``/proc/mounts``:
  NFS (EFS is NFS 4), SMB, Lustre, CephFS, GlusterFS, GPFS, BeeGFS, and FUSE mounts of object
  stores such as s3fs, gcsfuse, JuiceFS, mountpoint-s3); or
- the user says so (``--shared-paths``): the path is mounted at the same place on every node by
  means this check cannot see.

The check reads only the driver's mounts: a path on NFS here may still be missing on a node that
did not mount it; a read that then fails becomes the images' ``read_error`` rows, not lost work.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from facepipe.errors import UserError
from facepipe.storage.fs import is_s3

#: Mount types whose files every machine that mounts them sees alike.
NETWORK_FILESYSTEMS = frozenset(
    {
        "nfs",
        "nfs4",
        "cifs",
        "smb3",
        "smbfs",
        "lustre",
        "ceph",
        "glusterfs",
        "gpfs",
        "beegfs",
        "fuse.s3fs",
        "fuse.gcsfuse",
        "fuse.juicefs",
        "fuse.goofys",
        "fuse.mountpoint-s3",
        "fuse.rclone",
        "fuse.glusterfs",
        "fuse.cephfs",
        "fuse.sshfs",
    }
)


def _unescape(field: str) -> str:
    # /proc/mounts writes space, tab, newline and backslash in octal
    for code, ch in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, ch)
    return field


def mount_type(path: str, mounts: str | None = None) -> str:
    """The filesystem type of the mount holding ``path`` (symlinks resolved as far as the path
    exists), from ``mounts`` (the text of ``/proc/mounts``; read when None).
    "unknown" where there is no mount table (not Linux)."""
    if mounts is None:
        try:
            mounts = Path("/proc/mounts").read_text()
        except OSError:
            return "unknown"
    p, tail = Path(os.path.abspath(path)), []
    while not p.exists() and p != p.parent:  # symlinks resolved where the path exists; the rest as written
        p, tail = p.parent, [p.name, *tail]
    real = str(p.resolve().joinpath(*tail))
    best, kind = "", "unknown"
    for line in mounts.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        point = _unescape(fields[1])
        inside = real == point or real.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):  # the deepest mount point wins; a later mount over it too
            best, kind = point, fields[2]
    return kind


def unshared_local_paths(paths: Iterable[str], mounts: str | None = None) -> list[tuple[str, str]]:
    """The local paths among ``paths`` that are not on a network filesystem, with their mount type."""
    found = []
    for path in paths:
        if is_s3(path):
            continue
        kind = mount_type(path, mounts)
        if kind not in NETWORK_FILESYSTEMS:
            found.append((path, kind))
    return found


def check_paths_for_cluster(
    paths: Iterable[str], nodes: int, client: bool, shared: bool, mounts: str | None = None
) -> None:
    """Refuse (:class:`UserError`) local paths the cluster's nodes cannot all read: on a cluster
    of ``nodes`` > 1, or behind a Ray Client address (``client``), unless ``shared``
    (``--shared-paths``) or each path is on a network filesystem."""
    if shared or (nodes <= 1 and not client):
        return
    bad = unshared_local_paths(paths, mounts)
    if not bad:
        return
    where = "the Ray cluster is reached through Ray Client" if client else f"the Ray cluster has {nodes} nodes"
    listed = ", ".join(f"{p} ({kind})" for p, kind in bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
    raise UserError(
        f"local path {listed} is on this machine's own disk and {where}: the other nodes cannot read or write it. "
        "Use s3:// inputs and output, or mount the path at the same place on every node (NFS, EFS, Lustre) "
        "and pass --shared-paths"
    )
