"""Local paths on a multi-node cluster: refused before any work unless they are shared -- on a
network filesystem by the mount that holds them, or declared so with --shared-paths; s3:// and
one-node clusters always pass. The refusal on a real multi-node cluster: tests/test_multinode.py."""

import pytest

from facepipe.errors import UserError
from facepipe.storage.locality import check_paths_for_cluster, mount_type, unshared_local_paths

MOUNTS = """\
overlay / overlay rw,relatime 0 0
/dev/sda1 /data ext4 rw,relatime 0 0
fs-1234.efs.us-east-1.amazonaws.com:/ /data/shared nfs4 rw,vers=4.1 0 0
/dev/sdb1 /data/shared/scratch xfs rw 0 0
s3fs /mnt/my\\040bucket fuse.s3fs rw 0 0
tmpfs /tmp tmpfs rw 0 0
"""


def test_the_deepest_mount_holding_a_path_decides_its_type():
    assert mount_type("/data/photos/a.jpg", MOUNTS) == "ext4"
    assert mount_type("/data/shared/night1/a.jpg", MOUNTS) == "nfs4"
    assert mount_type("/data/shared/scratch/out", MOUNTS) == "xfs"
    assert mount_type("/data/sharedness", MOUNTS) == "ext4", "a prefix of a name is not a parent"
    assert mount_type("/mnt/my bucket/x", MOUNTS) == "fuse.s3fs", "escaped spaces in /proc/mounts"
    assert mount_type("/usr/lib", MOUNTS) == "overlay"


def test_a_path_not_created_yet_counts_by_its_existing_parent(tmp_path):
    real = mount_type(str(tmp_path))
    assert mount_type(str(tmp_path / "out" / "not" / "yet")) == real


def test_only_local_paths_off_network_filesystems_are_unshared():
    paths = ["s3://bucket/in", "/data/shared/in", "/data/photos", "/mnt/my bucket/out"]
    assert unshared_local_paths(paths, MOUNTS) == [("/data/photos", "ext4")]


def test_multi_node_clusters_refuse_unshared_local_paths_with_what_to_do():
    with pytest.raises(UserError) as e:
        check_paths_for_cluster(["/data/photos", "s3://b/out"], nodes=3, client=False, shared=False, mounts=MOUNTS)
    msg = str(e.value)
    assert "/data/photos (ext4)" in msg and "3 nodes" in msg and "--shared-paths" in msg and "s3://" in msg
    with pytest.raises(UserError, match="Ray Client"):
        check_paths_for_cluster(["/data/photos"], nodes=1, client=True, shared=False, mounts=MOUNTS)


def test_shared_s3_and_one_node_runs_pass():
    check_paths_for_cluster(["/data/photos"], nodes=1, client=False, shared=False, mounts=MOUNTS)
    check_paths_for_cluster(["/data/photos"], nodes=3, client=False, shared=True, mounts=MOUNTS)
    check_paths_for_cluster(["/data/shared/in", "s3://b/out"], nodes=3, client=False, shared=False, mounts=MOUNTS)
