"""The run's records: a batch's stats survive the Arrow row they cross Ray in, the run's totals are
their sums, and a manifest reads back from its JSON exactly (older manifests with fewer fields too)."""

import json

import pyarrow as pa

from facepipe.run.manifest import Counts, RunManifest, Timing
from facepipe.schema import STATS_SCHEMA
from facepipe.stages.write import BatchStats


def test_batch_stats_cross_ray_as_one_typed_arrow_row_and_come_back_equal():
    b = BatchStats(
        n_images=3,
        n_faces=4,
        status_counts={"ok": 2, "decode_error": 1},
        stage_s={"decode": 0.5, "detect": 1.0, "embed": 2.0, "write": 0.25},
        files=["faces/dt=2026-11-01/part-r-1.parquet"],
        unreadable=["s3://b/x.jpg"],
    )
    t = b.to_table()
    assert t.schema == STATS_SCHEMA and t.num_rows == 1
    assert t.schema.field("status_counts").type == pa.list_(pa.struct([("status", pa.string()), ("n", pa.int64())]))
    assert BatchStats.from_row(t.to_pylist()[0]) == b


def test_run_totals_are_the_sums_of_the_batches():
    a = BatchStats(2, 1, {"ok": 2}, {"decode": 0.1, "detect": 0.2, "embed": 0.3, "write": 0.4}, ["a"], [])
    b = BatchStats(3, 5, {"ok": 1, "read_error": 2}, {"decode": 1, "detect": 1, "embed": 1, "write": 1}, ["b"], ["u"])
    t = BatchStats.total([a, b])
    assert (t.n_images, t.n_faces, t.status_counts) == (5, 6, {"ok": 3, "read_error": 2})
    assert t.stage_s == {"decode": 1.1, "detect": 1.2, "embed": 1.3, "write": 1.4}
    assert (t.files, t.unreadable) == (["a", "b"], ["u"])
    assert BatchStats.total([]).n_images == 0


def test_a_manifest_reads_back_from_its_json_and_leaves_out_stages_that_did_not_run():
    m = RunManifest(
        run_id="r1",
        dt="2026-11-01",
        inputs=["/in"],
        output="/out",
        counts=Counts(images=3, images_ok=2, images_failed=1, failures_by_status={"decode_error": 1}),
        timing=Timing(list_s=0.1, pipeline_s=2.0, stage_task_s={"decode": 1.0}, images_per_s=1.5, wall_s=3.0),
        score={"scored": 2, "outliers": 0},
    )
    d = json.loads(json.dumps(m.to_json()))
    assert "cluster" not in d and "report_uri" not in d and "score_s" not in d["timing"]
    assert RunManifest.from_json(d) == m


def test_an_older_manifest_without_the_newer_fields_still_reads():
    old = {"run_id": "r0", "dt": "2026-10-01", "inputs": [], "output": "/out", "counts": {"images": 1}, "extra": 1}
    m = RunManifest.from_json(old)
    assert m.counts.images == 1 and m.counts.units_to_retry == [] and m.timing.wall_s is None and m.score is None


def test_a_damaged_manifest_is_left_out_of_the_runs_read_with_a_warning(tmp_path, caplog):
    """`facepipe search` and `report` read every run manifest: one damaged from outside is named
    in a warning and left out, the others still read."""
    from facepipe.run.manifest import read_manifests
    from facepipe.storage.output import Output

    (tmp_path / "_runs").mkdir()
    (tmp_path / "_runs" / "good.json").write_text(json.dumps({"run_id": "good"}))
    (tmp_path / "_runs" / "bad.json").write_text('{"run_id": "ba')
    assert read_manifests(Output(str(tmp_path))) == [{"run_id": "good"}]
    assert "bad.json" in caplog.text
    assert read_manifests(Output(str(tmp_path / "none"))) == []
