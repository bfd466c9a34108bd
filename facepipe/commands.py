"""The ``facepipe`` subcommands: each turns parsed flags into configs and calls the job's stages.

A user's mistake raises :class:`~facepipe.errors.UserError` (one line, exit 2; ``facepipe.cli``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
from contextlib import contextmanager
from typing import Any, Iterator

from facepipe.errors import UserError
from facepipe.flags import from_args, given
from facepipe.summary import cluster_lines, format_summary, run_summary, write_summary


def _dt_and_run_id(a: argparse.Namespace, prefix: str) -> tuple[str, str]:
    """The date (default: today, UTC) and run id (default: PREFIX-DATE) of a stage run on its own."""
    from datetime import datetime, timezone

    from facepipe.run.startup import validate_dt, validate_run_id

    dt = a.dt or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    validate_dt(dt)
    run_id = a.run_id or f"{prefix}-{dt}"
    validate_run_id(run_id)
    return dt, run_id


def cluster_config(a: argparse.Namespace, full: bool):
    from facepipe.stages.cluster.stage import ClusterConfig

    return from_args(ClusterConfig, a, full=full)


def cmd_cluster(a: argparse.Namespace) -> int:
    from facepipe.stages.cluster.stage import run_cluster

    dt, run_id = _dt_and_run_id(a, "cluster")
    print(f"facepipe cluster {run_id}:")
    with _writer(a.output, f"facepipe cluster {run_id}") as out, _corrections_checked():
        summary = run_cluster(out, dt, run_id, cluster_config(a, full=a.full))
    print("\n".join(cluster_lines(summary)))
    return 0


@contextmanager
def _corrections_checked() -> Iterator:
    """A corrections file that is not one (``facepipe.stages.cluster.corrections``) is the user's
    to fix: it is read before the clustering publishes anything."""
    from facepipe.stages.cluster.corrections import CorrectionError

    try:
        yield
    except CorrectionError as e:
        raise UserError(str(e)) from None


@contextmanager
def _writer(output: str | Any, holder: str) -> Iterator:
    """The output (a URI, or an ``Output`` already opened; a bad one is the user's error) with its
    lease held (facepipe.storage.lease)."""
    from facepipe.storage import lease
    from facepipe.storage.output import as_output

    try:
        out = as_output(output)
    except ValueError as e:
        raise UserError(str(e)) from None
    with lease.held(out, holder):
        yield out


def cmd_eval_cluster(a: argparse.Namespace) -> int:
    import duckdb

    from facepipe.stages.cluster.metrics import evaluate_clusters, labelled_faces, load_labels
    from facepipe.storage.output import Output

    try:
        labels = load_labels(a.labels)
        out = Output.open(a.output)
        tables = {t: out.dataset(t) for t in ("images", "faces", "face_identity")}
    except (OSError, ValueError) as e:
        raise UserError(str(e)) from None
    missing = [t for t, ds in tables.items() if ds is None]
    if missing:
        raise UserError(f"{a.output} has no {', '.join(missing)} table: run the job (and its clustering) first")
    images, faces, face_identity = (tables[t] for t in ("images", "faces", "face_identity"))  # noqa: F841 -- DuckDB reads them by name
    rows = duckdb.sql("""select f.image_id, i.source_uri, f.face_index, fi.identity_id
                         from faces f join images i using (image_id)
                         left join face_identity fi using (face_id)""").fetchall()
    pred, true = labelled_faces(rows, labels)
    if not true:
        raise UserError(f"none of the {len(labels)} labels names a face in {a.output}")
    print(f"{len(true)} labelled faces of {len(set(true))} people: {evaluate_clusters(pred, true)}")
    return 0


def run_config_from_args(a: argparse.Namespace):
    """The job's whole config for ``facepipe run``: the tree's defaults, under the file of
    ``--config`` or the past run of ``--like`` (its manifest's config), under the flags given."""
    from facepipe.config import RunConfig, from_dict, merged, read_config_file

    base: dict = {}
    if a.like:
        base = read_config_file(a.like)
    if a.config:
        base = merged(base, read_config_file(a.config))
    over = given(a, RunConfig)
    if a.inputs:
        over["inputs"] = list(a.inputs)
    if a.output:
        over["output"] = a.output
    if a.full_cluster or over.get("full"):
        over.setdefault("cluster", {})["full"] = True
    enc = {**(base.get("encryption") or {}), **over.pop("encryption", {})}
    cfg = from_dict(RunConfig, merged(base, over) | {"encryption": None})
    if not cfg.output:
        raise UserError("the following arguments are required: --output (or an output in --config / --like)")
    return dataclasses.replace(cfg, encryption=_encryption(enc))


def _encryption(settings: dict):
    """The encryption section (None: as the output already is), key file made absolute."""
    from facepipe.storage.crypto import EncryptionConfig

    if settings.get("kms") is None:
        if settings.get("key_file"):
            raise UserError("--key-file needs --kms local")
        return None
    key_file = settings.get("key_file") or ""
    try:
        return EncryptionConfig(**{**settings, "key_file": os.path.abspath(key_file) if key_file else ""})
    except (TypeError, ValueError) as e:
        raise UserError(str(e)) from None


def cmd_run(a: argparse.Namespace) -> int:
    from facepipe.run.job import run

    m = run(run_config_from_args(a), ray_address=a.ray_address)
    if a.report:
        from facepipe.tools.report import write_report

        try:
            m.report_uri = write_report(m.output, run_id=m.run_id)
        except Exception as e:  # the run is published; a report that fails must not fail it
            logging.getLogger("facepipe").warning("the run report could not be written: %s", e)
    print(format_summary(m))
    if m.report_uri:
        print(f"  report    {m.report_uri}")
    if a.summary_json:
        write_summary(a.summary_json, run_summary(m))
    return 0


def cmd_demo(a: argparse.Namespace) -> int:
    from facepipe.config import RunConfig
    from facepipe.run.job import run
    from facepipe.stages.read.sources import ReadConfig
    from facepipe.tools import demo

    archive = demo.build_demo_archive(a.workdir)
    print(f"demo archive: {archive.root} ({archive.n_files} files: loose images, a tar shard, a Parquet file)")
    cfg = RunConfig(
        inputs=archive.inputs,
        output=f"{a.workdir}/output",
        read=ReadConfig(image_column="image", id_column="key"),
        run_id=a.run_id,
    )
    m = run(cfg)
    from facepipe.tools.report import write_report

    m.report_uri = write_report(m.output, run_id=m.run_id)
    print(format_summary(m))
    print(f"  report    {m.report_uri}  (open it in a browser)")
    out = f"{a.workdir}/output"
    print(
        "\nQuery it with DuckDB (more in the README):\n"
        f"  SELECT i.source_uri, count(*) AS faces FROM read_parquet('{out}/faces/*/*.parquet', "
        "hive_partitioning = true) f\n"
        f"  JOIN read_parquet('{out}/images/*/*.parquet', hive_partitioning = true) i USING (image_id) GROUP BY 1;"
    )
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from facepipe.tools.report import write_report

    try:
        where = write_report(a.output, a.dt or None, a.run_id or None, a.html or None)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    print(f"report written to {where}")
    return 0


def cmd_correct(a: argparse.Namespace) -> int:
    import getpass

    from facepipe.stages.cluster import corrections
    from facepipe.stages.cluster.stage import run_cluster

    dt, _ = _dt_and_run_id(a, "correct")
    with _writer(a.output, f"facepipe correct {a.action}") as out, _corrections_checked():
        corrections.load(out)  # the ones already there readable, before adding one
        rows = corrections.requested(out, a.action, a.identities, a.face, a.name, a.author or getpass.getuser(), a.note)
        path = corrections.record(out, rows)
        print(f"recorded {rows.num_rows} correction(s) {', '.join(rows.column('correction_id').to_pylist())} in {path}")
        if a.no_apply:
            print("  not applied yet (--no-apply): the next clustering applies them")
            return 0
        # a run id of its own: another run id's events (a second correction that day) are not replaced
        run_id = a.run_id or f"correct-{dt}-{rows.column('correction_id')[0].as_py()[2:]}"
        summary = run_cluster(out, dt, run_id, cluster_config(a, full=False))
    print("\n".join(cluster_lines(summary)))
    return 0


def cmd_forget(a: argparse.Namespace) -> int:
    from facepipe.tools import erase

    req = erase.ForgetRequest(
        tuple(a.identity_id), tuple(a.image_id), tuple(a.source_prefix), a.request_id, a.requested_by, a.reason
    )
    try:
        req = req.resolved()
        if a.dry_run:
            e = erase.plan(a.output, req)
            print(
                f"would erase {len(e.image_ids)} images, {len(e.face_ids)} faces, {len(e.identity_ids)} identities "
                f"(and recompute {len(e.refreshed)}); rows per table {e.removed()}; nothing written (--dry-run)"
            )
            return 0
        with _writer(a.output, f"facepipe forget {req.request_id}") as out:
            audit = erase.forget(out, req)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    er = audit["erased"]
    print(
        f"forgot {er['images']} images, {er['faces']} faces, {len(er['identities_removed'])} identities "
        f"({len(er['identities_recomputed'])} recomputed without them); rows removed {audit['rows_removed']}"
    )
    print(f"  tombstones: later runs skip them; audit record {audit['audit_uri']}")
    return 0


def cmd_score(a: argparse.Namespace) -> int:
    from facepipe.run.startup import ensure_ray
    from facepipe.stages.score.stage import ScoreConfig, load_model, run_score
    from facepipe.storage.output import as_output

    dt, run_id = _dt_and_run_id(a, "score")
    cfg = from_args(ScoreConfig, a)
    try:  # the request checked before any work; a failure after that is not the user's (exit 1 or 3)
        output = as_output(a.output)
        if cfg.model:
            load_model(cfg.model)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    ensure_ray(a.ray_address)
    with _writer(output, f"facepipe score {run_id}") as out:
        summary = run_score(out, dt, run_id, cfg)
    print(
        f"facepipe score {run_id}: {summary.get('scored', 0)} faces of dt={dt} scored, "
        f"{summary.get('outliers', 0)} outliers" + (f" ({summary['skipped']})" if "skipped" in summary else "")
    )
    for emb, m in summary["models"].items():
        print(f"  {emb}: {json.dumps(m)}")
    return 0


def cmd_eval_detect(a: argparse.Namespace) -> int:
    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig
    from facepipe.stages.detect.stage import DetectConfig
    from facepipe.tools import evaluate

    d, decode = from_args(DetectConfig, a, "detect."), from_args(DecodeConfig, a, "decode.")
    try:
        gt, fmt = evaluate.load_ground_truth(a.boxes, a.format)
        device = getattr(a, "compute.device", "cpu").replace("auto", "cpu")
        det = create_model(d.name, d.weights, kind="detector", config=d.config, device=device)
        found = evaluate.detect_for_eval(det, a.images, sorted(gt), decode)
    except (OSError, KeyError, ValueError) as e:
        raise UserError(e.args[0] if len(e.args) == 1 else str(e)) from None
    rules = ["iou", "dlib"] if fmt == "imglab" else ["iou"]
    print(
        f"{det.model_id} on {len(gt)} images ({fmt} ground truth {a.boxes}), long side "
        f"{decode.long_side}{f' (min face {decode.min_face} px)' if decode.min_face else ''}, "
        f"recall/precision at score >= {d.score_threshold}:"
    )
    for rule in rules:
        print("  " + evaluate.evaluate(gt, found, rule, d.score_threshold).row())
    return 0
