"""Nightly incremental runs over a growing archive: each night processes only
new or changed input units, a changed unit's old rows are replaced, a night killed mid-run and
run again, or rerun, changes nothing, and after three nights the tables equal one clean run over
the final archive."""

import os
import shutil
import signal
import time

import duckdb
import pytest

from facepipe.config import RunConfig
from facepipe.run.job import run
from facepipe.stages.read.sources import ReadConfig
from testbed.procs import cli_run, wait_for_batches_in_flight

pytestmark = pytest.mark.slow


def _night(archive, out, dt, run_id, **kw):
    return run(RunConfig(inputs=(str(archive),), output=str(out), dt=dt, run_id=run_id, read=ReadConfig(), **kw))


def _tables(out):
    q = lambda sql: duckdb.sql(sql.replace("OUT", str(out))).fetchall()  # noqa: E731
    images = q("select image_id, source_uri, status, n_faces from read_parquet('OUT/images/*/*.parquet') order by all")
    faces = q("select face_id, image_id, face_index from read_parquet('OUT/faces/*/*.parquet') order by all")
    groups = q(
        "select list(face_id order by face_id) from read_parquet('OUT/face_identity/*/*.parquet') group by "
        "identity_id order by 1"
    )
    return images, faces, groups


def test_three_nights_equal_one_clean_run(ray_cluster, photos, tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "out"
    archive.mkdir()
    names = ["obama.jpg", "obama2.jpg", "biden.jpg", "grace_hopper.jpg", "Tom_Hanks_54745.png"]
    for n in names[:3]:
        shutil.copy(photos[n], archive / photos[n].name)

    m1 = _night(archive, out, "2026-11-01", "night-1")
    assert m1.counts.units_processed == 3

    for n in names[3:]:  # day 2: two new files
        shutil.copy(photos[n], archive / photos[n].name)
    m2 = _night(archive, out, "2026-11-02", "night-2")
    assert (m2.counts.units_processed, m2.counts.units_skipped) == (2, 3)
    assert m2.cluster["mode"] == "incremental"

    # day 3: one file of night 1 is replaced by another photo (same name, new content)
    changed = archive / photos["obama2.jpg"].name
    time.sleep(0.01)
    shutil.copy(photos["t1.jpg"], changed)
    os.utime(changed)
    crashed = cli_run(
        ray_cluster, [str(archive)], out, "night-3", "2026-11-03", batch_delay=3.0
    )  # night 3 dies mid-run ...
    wait_for_batches_in_flight(crashed)  # ... with a batch of the changed file in flight
    os.killpg(crashed.pid, signal.SIGKILL)
    crashed.wait(timeout=60)
    m3 = _night(archive, out, "2026-11-03", "night-3")  # ... and the orchestrator runs it again
    assert m3.counts.units_processed == 1
    # the kill came while a batch was in flight, so before publishing: the rerun replaces the unit
    assert m3.counts.units_replaced == 1
    assert m3.counts.rows_purged["images"] == 1 and m3.counts.rows_purged["faces"] == 1
    after3 = _tables(out)
    again = _night(archive, out, "2026-11-03", "night-3")  # the orchestrator reruns the night
    assert again.counts.units_processed == 1 and _tables(out) == after3

    clean_out = tmp_path / "clean"
    _night(archive, clean_out, "2026-11-03", "clean")
    images, faces, groups = after3
    clean_images, clean_faces, clean_groups = _tables(clean_out)
    assert images == clean_images and faces == clean_faces
    assert len({f for f, _, _ in faces}) == len(faces)  # no duplicates
    assert groups == clean_groups
    assert any(n == 6 for _, uri, _, n in images if uri.endswith(photos["obama2.jpg"].name))  # now t1's six people


def test_full_reprocesses_everything_without_duplicates(ray_cluster, photos, tmp_path):
    archive, out = tmp_path / "archive", tmp_path / "out"
    archive.mkdir()
    for n in ("biden.jpg", "obama.jpg"):
        shutil.copy(photos[n], archive / photos[n].name)
    _night(archive, out, "2026-11-01", "n1")
    before = _tables(out)
    m = _night(archive, out, "2026-11-02", "n2", full=True)
    assert m.counts.units_processed == 2 and m.counts.units_replaced == 2
    images, faces, _ = _tables(out)
    assert images == before[0] and faces == before[1]


def test_an_input_that_vanished_between_listing_and_reading_is_retried_next_night(
    ray_cluster, photos, tmp_path, monkeypatch
):
    """Night 1 lists a file that is gone when its read task runs (the listing race, made
    deterministic by listing it on purpose): one read_error row, the job succeeds, the unit is
    marked for retry. Night 2, the file is back: it is read, its read_error row is replaced, and
    the tables equal a clean run's."""
    import facepipe.run.job as pipeline
    from facepipe.run import state

    archive, out = tmp_path / "archive", tmp_path / "out"
    archive.mkdir()
    shutil.copy(photos["biden.jpg"], archive / "biden.jpg")
    late = archive / "late.jpg"
    real_list = pipeline.list_units

    def listing_with_a_vanished_file(uris):
        units = real_list(uris)
        return sorted(units + [state.Unit("image", str(late), 1234, 1)], key=lambda u: u.uri)

    monkeypatch.setattr(pipeline, "list_units", listing_with_a_vanished_file)
    m1 = _night(archive, out, "2026-11-01", "n1")
    monkeypatch.setattr(pipeline, "list_units", real_list)
    assert m1.counts.failures_by_status == {"read_error": 1} and m1.counts.units_to_retry == [str(late)]
    assert state.load(str(out))[str(late)]["status"] == "retry"

    shutil.copy(photos["obama.jpg"], late)
    m2 = _night(archive, out, "2026-11-02", "n2")
    assert m2.counts.units_processed == 1 and m2.counts.units_replaced == 1 and m2.counts.units_to_retry == []
    clean = tmp_path / "clean"
    _night(archive, clean, "2026-11-02", "clean")
    assert _tables(out) == _tables(clean)
