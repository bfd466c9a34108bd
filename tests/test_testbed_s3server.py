"""testbed/s3server.py, the tests' S3 server: every bucket a test suite makes can be written,
whatever the machine's free disk. ``weed mini`` sizes its volumes (up to 1 GiB) and their number
from the free disk, and a bucket holds a volume of its own: with 17 GB free the 17th bucket's
writes failed with InternalError, and the late tests of a full run (multinode, no_leaks) failed
in CI for the server, not the code."""

from testbed.procs import free_ports
from testbed.s3server import SeaweedFS, s3_env


def test_a_server_takes_writes_in_more_buckets_than_its_disk_would_size_it_for(tmp_path):
    port = free_ports(1)[0]
    server = SeaweedFS(tmp_path, port, s3_env(port))
    server.start()
    try:
        for i in range(48):
            server.client.create_bucket(Bucket=f"bucket-{i:03d}")
            server.client.put_object(Bucket=f"bucket-{i:03d}", Key="k", Body=b"x" * 1000)
        assert server.client.get_object(Bucket="bucket-047", Key="k")["Body"].read() == b"x" * 1000
    finally:
        server.stop()
