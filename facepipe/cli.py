"""``facepipe`` command line.

Errors a user can fix (a bad flag, a missing input, an unknown detector) print one line and exit
with status 2; the job's own failures exit 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path
from typing import Sequence

from facepipe import __version__
from facepipe.errors import UserError, storage_error


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # one line, no usage block
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _positive_int(s: str) -> int:
    v = int(s)
    if v <= 0:
        raise argparse.ArgumentTypeError(f"{s} is not a positive integer")
    return v


def _positive_float(s: str) -> float:
    v = float(s)
    if not v > 0:
        raise argparse.ArgumentTypeError(f"{s} is not a positive number")
    return v


def _unit_float(s: str) -> float:
    v = float(s)
    if not 0.0 <= v <= 1.0:
        raise argparse.ArgumentTypeError(f"{s} is not between 0 and 1")
    return v


def add_run_args(p: argparse.ArgumentParser) -> None:
    from facepipe.decode import DEFAULT_MAX_PIXELS

    p.add_argument(
        "inputs",
        nargs="+",
        metavar="INPUT",
        help="image directory, Parquet file/dir, s3:// prefix, or .tar shard(s); local or s3://",
    )
    p.add_argument("--output", "-o", required=True, help="output root (local path or s3://bucket/prefix)")
    p.add_argument(
        "--summary-json",
        default=None,
        metavar="PATH",
        help="also write a one-object JSON summary of the run for an orchestrator (- = the last line of stdout)",
    )
    p.add_argument(
        "--report", action="store_true", help="also write the run report OUT/_runs/RUN_ID.html (see `facepipe report`)"
    )
    p.add_argument(
        "--full",
        action="store_true",
        help="process every input again (default: only units new or changed since the published runs) "
        "and re-cluster everyone",
    )
    g = p.add_argument_group("detection")
    g.add_argument("--detector", default="centerface", help="registered detector name (default: centerface)")
    g.add_argument(
        "--detector-weights", default=None, help="detector weights, local path or s3:// (required for retinaface)"
    )
    g.add_argument(
        "--detector-config",
        default=None,
        help="detector config: a preset (retinaface: mnet025, mnet025_relu, mnet025_1mb, r50) or a JSON file",
    )
    g.add_argument("--score-threshold", type=_unit_float, default=0.5, help="minimum detection score (default 0.5)")
    g.add_argument("--nms-threshold", type=_unit_float, default=0.3, help="NMS IoU threshold (default 0.3)")
    g.add_argument(
        "--long-side",
        type=int,
        default=640,
        help="detector input long side in pixels; 0 = full resolution (default 640)",
    )
    g.add_argument(
        "--min-face",
        type=int,
        default=0,
        metavar="PX",
        help="smallest face width (original pixels) to find: large photos are detected above --long-side "
        "so such a face is 24 px at the detector (default 0 = off; 40 = dlib HOG's reach)",
    )
    g.add_argument("--batch-size", type=_positive_int, default=8, help="images per detector forward pass (default 8)")
    g.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    g = p.add_argument_group("protection at rest (docs/privacy.md)")
    g.add_argument(
        "--kms",
        choices=("local", "aws"),
        default=None,
        help="encrypt the embedding and centroid columns (Parquet modular encryption, plaintext footer); "
        "the output keeps this setting for every later run",
    )
    g.add_argument(
        "--key-file", default="", help="with --kms local: JSON file {KEY_ID: base64 key} holding the master keys"
    )
    g.add_argument(
        "--footer-key", default="facepipe-footer", help="master key id signing the footer (default facepipe-footer)"
    )
    g.add_argument(
        "--column-key",
        default="facepipe-embeddings",
        help="master key id of the biometric columns (default facepipe-embeddings)",
    )
    g = p.add_argument_group("embedding")
    g.add_argument(
        "--embedder",
        default="dlib_resnet",
        help="registered embedder: dlib_resnet (default, built in), arcface_r50, arcface_r100",
    )
    g.add_argument(
        "--embedder-weights", default=None, help="embedder weights, local path or s3:// (required for ArcFace)"
    )
    g.add_argument(
        "--align",
        choices=("auto", "dlib_sp5", "dlib_landmarks", "arcface"),
        default="auto",
        help="how faces are cut for the embedder (default auto: dlib_sp5 for dlib, arcface for ArcFace)",
    )
    g.add_argument(
        "--embed-batch-size", type=_positive_int, default=32, help="face chips per embedder forward pass (default 32)"
    )
    add_score_args(p.add_argument_group("outlier scoring (the final stage)"))
    p.add_argument("--no-score", action="store_true", help="skip the DROCC outlier-scoring stage")
    g = p.add_argument_group("identities (clustering over the whole archive)")
    add_cluster_args(g)
    g.add_argument("--no-cluster", action="store_true", help="skip the identity-clustering stage")
    g.add_argument(
        "--full-cluster",
        action="store_true",
        help="re-cluster every face of the archive (default: place tonight's faces)",
    )
    g = p.add_argument_group("inputs")
    g.add_argument("--image-column", default="image", help="Parquet column holding image bytes (default: image)")
    g.add_argument("--id-column", default=None, help="Parquet column naming each row (default: row number)")
    g.add_argument(
        "--max-pixels",
        type=_positive_int,
        default=DEFAULT_MAX_PIXELS,
        help=f"decompression-bomb guard (default {DEFAULT_MAX_PIXELS})",
    )
    g = p.add_argument_group("run")
    g.add_argument("--dt", default="", help="date partition YYYY-MM-DD (default: today, UTC)")
    g.add_argument("--run-id", default="", help="run id; rerunning an id replaces that run's files only (default: new)")
    g.add_argument(
        "--detect-actors",
        type=_positive_int,
        default=1,
        help="minimum model actors (detect + align + embed; default 1)",
    )
    g.add_argument(
        "--max-detect-actors",
        type=_positive_int,
        default=None,
        help="maximum model actors (default: one per GPU, else enough to fill half the CPUs)",
    )
    g.add_argument(
        "--cpus-per-actor",
        type=float,
        default=None,
        help="CPU slots per model actor (default: 1 with a GPU, 0.5 on CPU-only clusters)",
    )
    g.add_argument(
        "--rows-per-file", type=_positive_int, default=4096, help="images per output Parquet file (default 4096)"
    )
    g.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")


def add_score_args(g) -> None:
    g.add_argument(
        "--drocc-model", default=None, help="reuse a saved DROCC model (path or s3://) instead of training one"
    )
    g.add_argument(
        "--train-days",
        type=_positive_int,
        default=1,
        help="train on the faces of the last N date partitions (default 1)",
    )
    g.add_argument(
        "--threshold-policy",
        choices=("fpr", "percentile", "boundary"),
        default="fpr",
        help="outlier threshold: target false-positive rate on held-out faces (default), "
        "a percentile of training scores, or 0",
    )
    g.add_argument("--target-fpr", type=_unit_float, default=0.01, help="for --threshold-policy fpr (default 0.01)")


def add_cluster_args(g) -> None:
    g.add_argument(
        "--cluster-method",
        choices=("chinese_whispers", "mutual_density", "components"),
        default="chinese_whispers",
        help="clustering of the kNN graph (default chinese_whispers; see bench/RESULTS.md)",
    )
    g.add_argument(
        "--cluster-threshold",
        type=_positive_float,
        default=0.55,
        help="embedding distance that links two faces (default 0.55)",
    )
    g.add_argument(
        "--knn",
        choices=("auto", "exact", "ivf"),
        default="auto",
        help="neighbour search: exact (torch), ivf (FAISS), auto = exact on a GPU or up to 20,000 faces (default)",
    )


def cluster_config_from_args(a: argparse.Namespace, enabled: bool = True, full: bool = False):
    from facepipe.cluster.graph import IndexConfig
    from facepipe.cluster.stage import ClusterConfig

    return ClusterConfig(
        enabled=enabled,
        method=a.cluster_method,
        threshold=a.cluster_threshold,
        full=full,
        index=IndexConfig(backend=a.knn),
    )


def score_config_from_args(a: argparse.Namespace, enabled: bool = True):
    from facepipe.score.stage import ScoreConfig

    return ScoreConfig(
        enabled=enabled,
        model=a.drocc_model,
        train_days=a.train_days,
        threshold_policy=a.threshold_policy,
        target_fpr=a.target_fpr,
    )


def _check_resolution(a: argparse.Namespace) -> None:
    if a.long_side < 0:
        raise UserError(f"--long-side {a.long_side} must be >= 0")
    if a.min_face < 0:
        raise UserError(f"--min-face {a.min_face} must be >= 0")


def _encryption_from_args(a: argparse.Namespace):
    from facepipe.io.crypto import EncryptionConfig

    if a.kms is None:
        if a.key_file:
            raise UserError("--key-file needs --kms local")
        return None
    try:
        return EncryptionConfig(a.kms, a.footer_key, a.column_key, os.path.abspath(a.key_file) if a.key_file else "")
    except ValueError as e:
        raise UserError(str(e)) from None


def run_config_from_args(a: argparse.Namespace):
    from facepipe.align.stage import AlignConfig
    from facepipe.decode import DecodeConfig
    from facepipe.detect.stage import DetectConfig
    from facepipe.embed.stage import EmbedConfig
    from facepipe.io.sources import ReadConfig
    from facepipe.pipeline import ComputeConfig, RunConfig

    _check_resolution(a)
    return RunConfig(
        inputs=tuple(a.inputs),
        output=a.output,
        dt=a.dt,
        run_id=a.run_id,
        read=ReadConfig(image_column=a.image_column, id_column=a.id_column),
        decode=DecodeConfig(max_pixels=a.max_pixels, long_side=a.long_side, min_face=a.min_face),
        detect=DetectConfig(
            name=a.detector,
            weights=a.detector_weights,
            config=a.detector_config,
            score_threshold=a.score_threshold,
            nms_threshold=a.nms_threshold,
            batch_size=a.batch_size,
            device=a.device,
        ),
        embed=EmbedConfig(
            name=a.embedder,
            weights=a.embedder_weights,
            align=AlignConfig(method=a.align),
            batch_size=a.embed_batch_size,
            device=a.device,
        ),
        score=score_config_from_args(a, enabled=not a.no_score),
        cluster=cluster_config_from_args(a, enabled=not a.no_cluster, full=a.full_cluster or a.full),
        full=a.full,
        encryption=_encryption_from_args(a),
        compute=ComputeConfig(
            detect_actors_min=a.detect_actors,
            detect_actors_max=a.max_detect_actors,
            cpus_per_detect_actor=a.cpus_per_actor,
            rows_per_file=a.rows_per_file,
        ),
    )


def format_summary(m: dict) -> str:
    c, t = m["counts"], m["timing"]
    fails = ", ".join(f"{k} {v}" for k, v in c["failures_by_status"].items())
    stages = t["stage_task_s"]
    total = sum(stages.values()) or 1.0
    stage_txt = " · ".join(f"{k} {v:.1f}s ({100 * v / total:.0f}%)" for k, v in stages.items())
    lines = [
        f"facepipe run {m['run_id']} finished in {t['wall_s']:.1f}s",
        f"  inputs    {c['input_units']} units: {c['units_processed']} processed ({c['units_replaced']} changed), "
        f"{c['units_skipped']} already in the output"
        + (f", {len(c['units_to_retry'])} to retry next run" if c.get("units_to_retry") else ""),
        f"  images    {c['images']} ({c['images_ok']} ok, {c['images_failed']} failed{': ' + fails if fails else ''})",
        f"  faces     {c['faces']}",
        f"  stages    {stage_txt}  (task seconds; stages overlap)",
        f"  rate      {t['images_per_s']} images/s through the pipeline ({t['pipeline_s']:.1f}s), listing "
        f"{t['list_s']:.1f}s",
        f"  output    {m['output']}/images and {m['output']}/faces, partition dt={m['dt']}",
        *_score_lines(m.get("score")),
        *_cluster_lines(m.get("cluster")),
        f"  manifest  {m['manifest_uri']}",
    ]
    return "\n".join(lines)


def _score_lines(score: dict | None) -> list[str]:
    if score is None:
        return ["  outliers  not scored (--no-score)"]
    if "skipped" in score:
        return [f"  outliers  not scored: {score['skipped']}"]
    models = ", ".join(v["model_id"] for v in score["models"].values() if "model_id" in v)
    return [f"  outliers  {score['outliers']} of {score['scored']} faces flagged by {models} -> face_outliers"]


def _cluster_lines(c: dict | None) -> list[str]:
    if c is None:
        return ["  people    not clustered (--no-cluster)"]
    if "skipped" in c:
        return [f"  people    not clustered: {c['skipped']}"]
    how = (
        f"{c['placed']} new or unplaced faces placed, {c['region']} looked at"
        if c["mode"] == "incremental"
        else "every face re-clustered"
    )
    return [
        f"  people    {c['identities']} identities over {c['faces']} faces of the archive ({c['unassigned']} "
        f"unassigned, {c['reused_ids']} ids kept)",
        f"            {c['mode']}: {how}; {c['merges']} merges, {c['splits']} splits -> identity_events",
    ]


def cmd_cluster(a: argparse.Namespace) -> int:
    from datetime import datetime, timezone

    from facepipe.cluster.stage import run_cluster
    from facepipe.pipeline import validate_dt, validate_run_id

    dt = a.dt or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    validate_dt(dt)
    run_id = a.run_id or f"cluster-{dt}"
    validate_run_id(run_id)
    print(f"facepipe cluster {run_id}:")
    print("\n".join(_cluster_lines(run_cluster(a.output, dt, run_id, cluster_config_from_args(a, full=a.full)))))
    return 0


def cmd_eval_cluster(a: argparse.Namespace) -> int:
    import duckdb

    from facepipe.cluster.metrics import evaluate_clusters, labelled_faces, load_labels
    from facepipe.io.output import Output

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


def cmd_run(a: argparse.Namespace) -> int:
    from facepipe.pipeline import run

    m = run(run_config_from_args(a), ray_address=a.ray_address)
    if a.report:
        from facepipe.report import write_report

        try:
            m["report_uri"] = write_report(m["output"], run_id=m["run_id"])
        except Exception as e:  # the run is published; a report that fails must not fail it
            logging.getLogger("facepipe").warning("the run report could not be written: %s", e)
    print(format_summary(m))
    if m.get("report_uri"):
        print(f"  report    {m['report_uri']}")
    if a.summary_json:
        write_summary(a.summary_json, run_summary(m))
    return 0


def write_summary(dest: str, summary: dict) -> None:
    """The one-object JSON summary for an orchestrator: the last line of stdout (``-``) or a file."""
    text = json.dumps(summary, sort_keys=True)
    if dest == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n")


def run_summary(m: dict) -> dict:
    """What an orchestrator needs from a finished run (the manifest has everything)."""
    cluster, score = m.get("cluster") or {}, m.get("score") or {}
    return {
        "status": "ok",
        "run_id": m["run_id"],
        "dt": m["dt"],
        "manifest": m.get("manifest_uri"),
        "counts": m["counts"],
        "identities": {k: cluster.get(k) for k in ("mode", "identities", "merges", "splits", "unassigned")}
        if "identities" in cluster
        else None,
        "outliers": score.get("outliers"),
        "wall_s": m["timing"].get("wall_s"),
        "report": m.get("report_uri"),
    }


def cmd_demo(a: argparse.Namespace) -> int:
    from facepipe import demo
    from facepipe.io.sources import ReadConfig
    from facepipe.pipeline import RunConfig, run

    archive = demo.build_demo_archive(a.workdir)
    print(f"demo archive: {archive.root} ({archive.n_files} files: loose images, a tar shard, a Parquet file)")
    cfg = RunConfig(
        inputs=archive.inputs,
        output=f"{a.workdir}/output",
        read=ReadConfig(image_column="image", id_column="key"),
        run_id=a.run_id,
    )
    m = run(cfg)
    from facepipe.report import write_report

    m["report_uri"] = write_report(m["output"], run_id=m["run_id"])
    print(format_summary(m))
    print(f"  report    {m['report_uri']}  (open it in a browser)")
    out = f"{a.workdir}/output"
    print(
        "\nQuery it with DuckDB (more in the README):\n"
        f"  SELECT i.source_uri, count(*) AS faces FROM read_parquet('{out}/faces/*/*.parquet', "
        "hive_partitioning = true) f\n"
        f"  JOIN read_parquet('{out}/images/*/*.parquet', hive_partitioning = true) i USING (image_id) GROUP BY 1;"
    )
    return 0


def cmd_report(a: argparse.Namespace) -> int:
    from facepipe.report import write_report

    try:
        where = write_report(a.output, a.dt or None, a.run_id or None, a.html or None)
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    print(f"report written to {where}")
    return 0


def cmd_forget(a: argparse.Namespace) -> int:
    from facepipe import erase

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
        audit = erase.forget(a.output, req)
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
    from datetime import datetime, timezone

    from facepipe.pipeline import ensure_ray, validate_dt, validate_run_id
    from facepipe.score.stage import run_score

    dt = a.dt or datetime.now(timezone.utc).strftime("%Y-%m-%d")
    validate_dt(dt)
    run_id = a.run_id or f"score-{dt}"
    validate_run_id(run_id)
    ensure_ray(a.ray_address)
    try:
        summary = run_score(a.output, dt, run_id, score_config_from_args(a))
    except (FileNotFoundError, ValueError) as e:
        raise UserError(str(e)) from None
    print(
        f"facepipe score {run_id}: {summary.get('scored', 0)} faces of dt={dt} scored, "
        f"{summary.get('outliers', 0)} outliers" + (f" ({summary['skipped']})" if "skipped" in summary else "")
    )
    for emb, m in summary["models"].items():
        print(f"  {emb}: {json.dumps(m)}")
    return 0


def cmd_eval_detect(a: argparse.Namespace) -> int:
    from facepipe import evaluate
    from facepipe.decode import DecodeConfig
    from facepipe.registry import create_model

    _check_resolution(a)
    try:
        gt, fmt = evaluate.load_ground_truth(a.boxes, a.format)
        det = create_model(
            a.detector,
            a.detector_weights,
            kind="detector",
            config=a.detector_config,
            device="cpu" if a.device == "auto" else a.device,
        )
        found = evaluate.detect_for_eval(
            det, a.images, sorted(gt), DecodeConfig(long_side=a.long_side, min_face=a.min_face)
        )
    except (OSError, KeyError, ValueError) as e:
        raise UserError(e.args[0] if len(e.args) == 1 else str(e)) from None
    rules = ["iou", "dlib"] if fmt == "imglab" else ["iou"]
    print(
        f"{det.model_id} on {len(gt)} images ({fmt} ground truth {a.boxes}), long side "
        f"{a.long_side}{f' (min face {a.min_face} px)' if a.min_face else ''}, "
        f"recall/precision at score >= {a.score_threshold}:"
    )
    for rule in rules:
        print("  " + evaluate.evaluate(gt, found, rule, a.score_threshold).row())
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="facepipe", description="Detect and index faces across image archives on Ray.")
    p.add_argument("--version", action="version", version=f"facepipe {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)
    r = sub.add_parser("run", help="extract faces from image archives into Parquet tables")
    add_run_args(r)
    r.set_defaults(func=cmd_run)
    d = sub.add_parser("demo", help="build a small demo archive from real photos and run the job on it")
    d.add_argument(
        "--workdir", default="demo-output", help="where the archive and the output go (default: demo-output)"
    )
    d.add_argument("--run-id", default="demo", help="run id (default: demo; rerunning replaces it)")
    d.set_defaults(func=cmd_demo)
    cl = sub.add_parser(
        "cluster", help="place the archive's new faces into identities (--full: re-cluster all; ids that map are kept)"
    )
    cl.add_argument("--output", "-o", required=True, help="the job's output root (local or s3://)")
    cl.add_argument("--dt", default="", help="date the snapshot is filed under (default: today, UTC)")
    cl.add_argument("--run-id", default="", help="run id (default: cluster-DT)")
    add_cluster_args(cl)
    cl.add_argument(
        "--full", action="store_true", help="re-cluster every face instead of placing those the last snapshot has not"
    )
    cl.set_defaults(func=cmd_cluster)
    ec = sub.add_parser(
        "eval-cluster", help="identity quality against known labels (pairwise/BCubed P/R/F, NMI, merges)"
    )
    ec.add_argument("--output", "-o", required=True, help="the job's output root (local or s3://)")
    ec.add_argument("--labels", required=True, help="CSV with a header: image_id or source_uri, label[, face_index]")
    ec.set_defaults(func=cmd_eval_cluster)
    rp = sub.add_parser(
        "report", help="one self-contained HTML page of a run: counts, time, charts, identities, outliers, failures"
    )
    rp.add_argument("--output", "-o", required=True, help="the job's output root (local or s3://)")
    rp.add_argument("--dt", default="", help="the date whose latest run to show (default: the latest run)")
    rp.add_argument("--run-id", default="", help="the run to show (default: the latest, of --dt when given)")
    rp.add_argument("--html", default="", metavar="PATH", help="where to write it (default: OUT/_runs/RUN_ID.html)")
    rp.set_defaults(func=cmd_report)
    fg = sub.add_parser(
        "forget", help="erase a person or images from every table, keep them out of later runs, audit it"
    )
    fg.add_argument("--output", "-o", required=True, help="the job's output root (local or s3://)")
    fg.add_argument(
        "--identity-id", action="append", default=[], metavar="ID", help="erase this identity's faces (repeatable)"
    )
    fg.add_argument(
        "--image-id", action="append", default=[], metavar="ID", help="erase this image and its faces (repeatable)"
    )
    fg.add_argument(
        "--source-prefix",
        action="append",
        default=[],
        metavar="URI",
        help="erase every image whose source_uri starts with URI, and its faces (repeatable)",
    )
    fg.add_argument(
        "--request-id", default="", help="names the audit record and tombstone (default: forget-TIMESTAMP-RANDOM)"
    )
    fg.add_argument("--requested-by", default="", help="who asked, for the audit record (default: the OS user)")
    fg.add_argument("--reason", default="", help="why, for the audit record (e.g. a ticket number; no personal data)")
    fg.add_argument("--dry-run", action="store_true", help="print what would be erased; write nothing")
    fg.set_defaults(func=cmd_forget)
    sc = sub.add_parser("score", help="DROCC outlier scores for the faces of one date partition")
    sc.add_argument("--output", "-o", required=True, help="the job's output root (local or s3://)")
    sc.add_argument("--dt", default="", help="date partition YYYY-MM-DD (default: today, UTC)")
    sc.add_argument("--run-id", default="", help="run id of this scoring (default: score-DT; rerunning replaces it)")
    sc.add_argument("--ray-address", default=None, help="Ray cluster address (default: RAY_ADDRESS or a local cluster)")
    add_score_args(sc)
    sc.set_defaults(func=cmd_score)
    e = sub.add_parser("eval-detect", help="recall, precision and AP of a detector against ground-truth boxes")
    e.add_argument("images", metavar="IMAGES", help="folder the ground truth's image names are relative to")
    e.add_argument(
        "--boxes", required=True, help="ground truth: dlib imglab XML or WIDER FACE wider_face_val_bbx_gt.txt"
    )
    e.add_argument(
        "--format",
        choices=("auto", "imglab", "wider"),
        default="auto",
        help="ground-truth format (default: by content)",
    )
    e.add_argument("--detector", default="centerface", help="registered detector name (default: centerface)")
    e.add_argument("--detector-weights", default=None, help="detector weights, local path or s3://")
    e.add_argument("--detector-config", default=None, help="detector config preset or JSON file (retinaface)")
    e.add_argument("--long-side", type=int, default=640, help="detector input long side, as in the job (default 640)")
    e.add_argument(
        "--min-face",
        type=int,
        default=0,
        metavar="PX",
        help="as in the job: smallest face width to keep detectable (default 0 = off)",
    )
    e.add_argument(
        "--score-threshold",
        type=_unit_float,
        default=0.5,
        help="operating threshold for recall/precision (default 0.5)",
    )
    e.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    e.set_defaults(func=cmd_eval_detect)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    level = logging.INFO if args.verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return args.func(args)
    except UserError as e:
        print(f"facepipe {args.command}: error: {e}", file=sys.stderr)
        return 2
    except Exception as e:
        why = storage_error(e)
        if why is None:
            raise
        print(
            f"facepipe {args.command}: storage error: {why} -- gave up after retrying; nothing more of this run is "
            "published and earlier runs stay readable; run the same command again when the storage answers",
            file=sys.stderr,
        )
        if getattr(args, "summary_json", None):
            failed = {"status": "failed", "error": "storage", "message": why}
            write_summary(
                args.summary_json, {**failed, "run_id": getattr(args, "run_id", None), "dt": getattr(args, "dt", None)}
            )
        return 3


if __name__ == "__main__":
    sys.exit(main())
