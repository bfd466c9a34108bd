"""What a finished run tells a person (``format_summary``, the lines the CLI prints) and an
orchestrator (``run_summary``, one JSON object, ``write_summary``)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from facepipe.run.manifest import RunManifest


def format_summary(m: RunManifest) -> str:
    c, t = m.counts, m.timing
    fails = ", ".join(f"{k} {v}" for k, v in c.failures_by_status.items())
    stages = t.stage_task_s
    total = sum(stages.values()) or 1.0
    stage_txt = " · ".join(f"{k} {v:.1f}s ({100 * v / total:.0f}%)" for k, v in stages.items())
    where = f"{m.resources.get('workers', '?')} local worker processes"
    lines = [
        f"facepipe run {m.run_id} finished in {t.wall_s:.1f}s",
        f"  inputs    {c.input_units} units: {c.units_processed} processed ({c.units_replaced} changed), "
        f"{c.units_skipped} already in the output"
        + (f", {len(c.units_to_retry)} to retry next run" if c.units_to_retry else ""),
        f"  images    {c.images} ({c.images_ok} ok, {c.images_failed} failed{': ' + fails if fails else ''})",
        f"  faces     {c.faces}",
        f"  stages    {stage_txt}  (task seconds; stages overlap)",
        f"  rate      {t.images_per_s} images/s through the pipeline ({t.pipeline_s:.1f}s, "
        + (f"Ray start {t.ray_start_s:.1f}s" if t.ray_start_s is not None else f"{where}, no Ray")
        + f"), listing {t.list_s:.1f}s",
        f"  cores     {t.cores_busy} of {m.resources.get('cluster_cpus', '?')} busy with the stages' tasks",
        f"  output    {m.output}/images and {m.output}/faces, partition dt={m.dt}",
        *score_lines(m.score),
        *cluster_lines(m.cluster),
        f"  manifest  {m.manifest_uri}",
    ]
    return "\n".join(lines)


def score_lines(score: dict | None) -> list[str]:
    if score is None:
        return ["  outliers  not scored (--no-score)"]
    if "skipped" in score:
        return [f"  outliers  not scored: {score['skipped']}"]
    models = ", ".join(
        v["model_id"] + (" (shipped with facepipe: too few faces to train one)" if v.get("shipped") else "")
        for v in score["models"].values()
        if "model_id" in v
    )
    why = ", ".join(f"{n} {reason}" for reason, n in (score.get("reasons") or {}).items())
    flagged = f"{score['outliers']} of {score['scored']} faces flagged" + (f" ({why})" if why else "")
    return [f"  outliers  {flagged} by {models} -> face_outliers"]


def cluster_lines(c: dict | None) -> list[str]:
    if c is None:
        return ["  people    not clustered (--no-cluster)"]
    if "skipped" in c:
        return [f"  people    not clustered: {c['skipped']}"]
    how = (
        f"{c['placed']} new or unplaced faces placed, {c['region']} looked at"
        if c["mode"] == "incremental"
        else "every face re-clustered"
    )
    t = c.get("threshold")
    if t:  # how the link threshold was chosen (facepipe.stages.cluster.threshold)
        how += f"; link threshold {t['value']:.3f}" + (
            f" (chosen for {t['faces']} faces"
            + (f", raised from the law's {t['law']:.3f}" if t.get("law") else "")
            + ")"
            if t["how"] == "auto"
            else f" ({t['how']})"
        )
        if t.get("linkage") is not None:  # the second pass's cut (facepipe.stages.cluster.linkage)
            how += f", identities close as groups merged under {t['linkage']:.3f}"
    lines = [
        f"  people    {c['identities']} identities over {c['faces']} faces of the archive ({c['unassigned']} "
        f"unassigned; left out: {c.get('outliers_left_out', 0)} outliers, {c.get('too_small', 0)} too small; "
        f"{c['reused_ids']} ids kept)",
        f"            {c['mode']}: {how}; {c['merges']} merges, {c['splits']} splits -> identity_events",
    ]
    ix = c.get("index") or {}
    if "trained" in ix:  # the kept IVF cells (facepipe.storage.ivf_store)
        lines.append(
            f"            neighbour index: {ix['nlist']} cells "
            + ("trained now" if ix["trained"] else f"kept from the last night, {ix['added']} faces added")
            + (f", {ix['searched']} faces searched" if "searched" in ix else "")
            + (f", {ix['lists_changed']} neighbour lists written" if "lists_changed" in ix else "")
            + (f", searched on {ix['shards']} Ray actors" if ix.get("shards", 1) > 1 else "")
            + f" ({ix['build_s']:.1f} s) -> _index/"
        )
    fixes = c.get("corrections") or {}
    if any(fixes.values()):  # human corrections (facepipe.stages.cluster.corrections)
        refused = fixes.get("refused") or []
        lines.append(
            f"            corrections: {fixes.get('in_force', 0)} in force, {fixes.get('waiting', 0)} waiting for "
            f"their faces" + (f", refused (a cannot-link wins): {', '.join(refused)}" if refused else "")
        )
    return lines


def write_summary(dest: str, summary: dict) -> None:
    """The one-object JSON summary for an orchestrator: the last line of stdout (``-``) or a file."""
    text = json.dumps(summary, sort_keys=True)
    if dest == "-":
        print(text)
    else:
        Path(dest).write_text(text + "\n")


def failed_summary(args: Any, kind: str, why: str) -> None:
    """A failed command's summary for an orchestrator (``--summary-json``): status, the kind of
    failure (``internal``, ``storage``, ``cluster``), the message, the run id and date given."""
    if getattr(args, "summary_json", None):
        ids = {"run_id": getattr(args, "run_id", None), "dt": getattr(args, "dt", None)}
        write_summary(args.summary_json, {"status": "failed", "error": kind, "message": why, **ids})


def run_summary(m: RunManifest) -> dict:
    """What an orchestrator needs from a finished run (the manifest has everything)."""
    cluster, score = m.cluster or {}, m.score or {}
    return {
        "status": "ok",
        "run_id": m.run_id,
        "dt": m.dt,
        "manifest": m.manifest_uri or None,
        "counts": dataclasses.asdict(m.counts),
        "identities": {k: cluster.get(k) for k in ("mode", "identities", "merges", "splits", "unassigned")}
        if "identities" in cluster
        else None,
        "outliers": score.get("outliers"),
        "wall_s": m.timing.wall_s,
        "report": m.report_uri,
    }
