"""Which failures the CLI reports as storage or cluster errors (exit 3, worth running again) and which as
user errors; the real-server behaviour is in tests/storage/test_s3_faults.py."""

from facepipe.errors import StorageError, cluster_error, is_transient, retryable_error, storage_error

NET = OSError(
    "When reading information for key 'a' in bucket 'b': AWS Error NETWORK_CONNECTION during HeadObject "
    "operation: curlCode: 7, Could not connect to server"
)


class _Wrapped(Exception):
    """Like Ray's RayTaskError: the worker's exception is kept in ``.cause``, not chained."""

    def __init__(self, cause: BaseException) -> None:
        super().__init__("task failed")
        self.cause = cause


def test_storage_error_is_found_through_chains_and_ray_wrappers():
    assert storage_error(NET) and "NETWORK_CONNECTION" in storage_error(NET)
    try:
        try:
            raise NET
        except OSError as e:
            raise RuntimeError("write failed") from e
    except RuntimeError as e:
        assert storage_error(e) == storage_error(NET)
    assert storage_error(_Wrapped(RuntimeError("x"))) is None
    assert storage_error(_Wrapped(StorageError("disk full"))) == "disk full"


def test_missing_files_and_plain_errors_are_not_storage_errors():
    assert storage_error(FileNotFoundError("no such file")) is None
    assert storage_error(ValueError("bad")) is None
    # a wrong or missing key is not worth running again: not a storage error (exit 3)
    assert storage_error(OSError("Cannot decrypt ColumnMetadata. FileDecryption is not setup correctly")) is None
    assert storage_error(OSError("AWS Error ACCESS_DENIED during PutObject operation")) is None


def test_only_network_throttling_and_server_errors_are_transient():
    assert is_transient(NET)
    assert is_transient(OSError("AWS Error SLOW_DOWN during GetObject operation"))
    assert not is_transient(OSError("AWS Error ACCESS_DENIED during HeadObject operation: Access Denied"))
    assert not is_transient(FileNotFoundError("x"))


def test_work_ray_lost_with_a_node_is_a_cluster_error_worth_running_again():
    """An object gone with its node, wrapped the way Ray hands it to the driver (a RayTaskError
    that is also an instance of its cause), is a cluster error (exit 3); other task errors are not."""
    import ray.exceptions as rex

    lost = rex.ObjectLostError("a" * 56, "owner", "call site")
    wrapped = rex.RayTaskError("write_batch", "traceback", lost).as_instanceof_cause()
    assert cluster_error(lost).startswith("ObjectLostError")
    assert cluster_error(wrapped).startswith("ObjectLostError")
    assert retryable_error(wrapped)[0] == "cluster"
    assert retryable_error(NET) == ("storage", storage_error(NET))
    assert cluster_error(rex.RayTaskError("f", "tb", ValueError("bad")).as_instanceof_cause()) is None
    assert retryable_error(ValueError("bad")) is None
