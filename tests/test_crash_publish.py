"""Atomic publishes: the driver killed in the middle of publishing any table after the extract --
outlier scores, identity events, the identity snapshot -- (its new files moved in, the old ones
not yet deleted), then the same command run again, gives the same tables as a run that never
crashed, identity ids included. Before, the snapshot's old files were deleted before the new ones
moved in: a crash between left no snapshot, and the rerun renamed every person. Real processes
(tests/faulty_cli.py kills the driver with os._exit), the local executor, two nights; DROCC
trains on as few as 5 confident faces here (a config file: the photos that ship hold ~15)."""

import shutil
import subprocess
import sys

import duckdb
import pytest
from conftest import REPO

pytestmark = pytest.mark.slow

NIGHT1 = ("obama.jpg", "obama2.jpg", "biden.jpg")
NIGHT2 = ("obama3.jpg", "t1.jpg", "Tom_Hanks_54745.png")
QUERIES = {
    "faces": "select face_id, image_id from T order by all",
    "face_outliers": "select face_id, drocc_score, is_outlier from T order by all",
    "identities": "select identity_id, n_faces, representative_face_id from T order by all",
    "face_identity": "select face_id, identity_id, status from T order by all",
    "identity_events": "select event, identity_id, face_ids from T order by all",
}


def _night(out, inputs, dt, *crash: str) -> subprocess.CompletedProcess:
    config = inputs.parent / "few-faces.toml"
    config.write_text("[score]\nmin_faces = 5\n")
    args = ["run", str(inputs), "-o", str(out), "--executor", "local", "--dt", dt, "--run-id", f"night-{dt}",
            "--config", str(config)]  # fmt: skip
    cmd = [sys.executable, str(REPO / "tests" / "faulty_cli.py"), *crash, "--", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=280)


def _tables(out) -> dict:
    """Each table's rows (none when the run wrote no file of it, as a night without events)."""
    return {
        t: duckdb.sql(q.replace("T", f"read_parquet('{out}/{t}/*/*.parquet')")).fetchall()
        if list(out.glob(f"{t}/*/*.parquet"))
        else []
        for t, q in QUERIES.items()
    }


@pytest.fixture(scope="module")
def nights(photos, tmp_path_factory):
    """The two nights' inputs (the second adds photos) and the tables of a run that never crashed."""
    root = tmp_path_factory.mktemp("nights")
    one, two = root / "one", root / "two"
    for d, names in ((one, NIGHT1), (two, NIGHT1 + NIGHT2)):
        d.mkdir()
        for n in names:
            shutil.copy(photos[n], d / n)
    clean = root / "clean"
    r = _night(clean, one, "2026-11-01")
    assert r.returncode == 0, r.stderr[-3000:]
    after_one = root / "after-one"
    shutil.copytree(clean, after_one)  # each crash test starts from this first night
    r = _night(clean, two, "2026-11-02")
    assert r.returncode == 0, r.stderr[-3000:]
    tables = _tables(clean)
    assert all(tables[t] for t in ("faces", "face_outliers", "identities", "face_identity")), tables
    return after_one, two, tables


@pytest.mark.parametrize("table", ["face_outliers", "identity_events", "face_identity"])
def test_a_crash_mid_publish_then_a_rerun_equals_a_clean_run(nights, tmp_path, table):
    after_one, two, clean = nights
    out = tmp_path / "out"
    shutil.copytree(after_one, out)
    crashed = _night(out, two, "2026-11-02", f"--crash-at=publish:{table}")
    assert crashed.returncode == 137, crashed.stderr[-3000:]
    assert list((out / "_journal").iterdir()), "the crash left its intent"
    again = _night(out, two, "2026-11-02")
    assert again.returncode == 0, again.stderr[-3000:]
    assert not list((out / "_journal").iterdir())
    assert _tables(out) == clean
