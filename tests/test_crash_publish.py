"""Atomic publishes: the driver killed in the middle of publishing any table after the extract --
outlier scores, identity events, the identity snapshot -- (its new files moved in, the old ones
not yet deleted), then the same command run again, gives the same tables as a run that never
crashed, identity ids included. Before, the snapshot's old files were deleted before the new ones
moved in: a crash between left no snapshot, and the rerun renamed every person. Real processes
(tests/faulty_cli.py kills the driver with os._exit), the two nights of ``testbed.nights``."""

import shutil

import pytest

from testbed import nights as two_nights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def nights(photos, tmp_path_factory) -> two_nights.Nights:
    return two_nights.build(photos, tmp_path_factory.mktemp("nights"))


@pytest.mark.parametrize("table", ["face_outliers", "identity_events", "face_identity"])
def test_a_crash_mid_publish_then_a_rerun_equals_a_clean_run(nights, tmp_path, table):
    out = tmp_path / "out"
    shutil.copytree(nights.after_one, out)
    crashed = two_nights.second(out, nights, f"--crash-at=publish:{table}")
    assert crashed.returncode == 137, crashed.stderr[-3000:]
    assert list((out / "_journal").iterdir()), "the crash left its intent"
    again = two_nights.second(out, nights)
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list((out / "_journal").iterdir())
    assert two_nights.tables(out) == nights.clean
