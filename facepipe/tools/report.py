"""The run report: one self-contained HTML file that shows what a night's run did.

``facepipe report --output OUT [--dt DATE] [--run-id ID]`` (and ``facepipe run --report``, which
the nightly job passes) writes ``OUT/_runs/RUN_ID.html`` beside the run's manifest. Everything is
inline -- CSS, SVG charts, JPEG thumbnails as data URIs -- so the file opens anywhere, offline,
and makes no request. Sections (each an element with the id in brackets):

- counts and failures by kind [summary], time per stage [stages];
- charts [charts]: faces per image, detection scores, identity sizes, DROCC scores with the
  threshold;
- the largest identities as face thumbnails cut from the source images [identities];
- the faces flagged as outliers (then the highest-scored others), as thumbnails [outliers];
- every failed input with its error [failed-inputs].

No embedding value is shown; thumbnails are of faces the output already names (the report is as
sensitive as the output it is made from: keep it beside it, under the same access rules).
"""

from __future__ import annotations

import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from facepipe.run.manifest import RunManifest, read_manifests
from facepipe.storage import fs as fsio
from facepipe.storage.output import RUNS, Output
from facepipe.tools.report_html import CSS, bar_chart, count_chart, face_tile, histogram, thumbnails


@dataclass(frozen=True)
class ReportConfig:
    """identities: how many of the largest identities to show, faces_per_identity: thumbnails
    each; outliers: how many top outliers; failures: failed inputs listed (the rest counted)."""

    identities: int = 8
    faces_per_identity: int = 8
    outliers: int = 16
    failures: int = 200


def find_manifest(output: str, dt: str | None = None, run_id: str | None = None) -> RunManifest:
    """The manifest of ``run_id``, or of the latest run (of date ``dt`` when given)."""
    out = Output(output)  # the manifests are plain JSON: no need for the encryption setting
    if run_id:
        try:
            return RunManifest.from_json(json.loads(fsio.read_bytes(out.fs, out.path(RUNS, f"{run_id}.json"))))
        except FileNotFoundError:
            raise FileNotFoundError(f"no run {run_id} in {output} (no {RUNS}/{run_id}.json)") from None
    if not out.exists(RUNS):
        raise FileNotFoundError(f"{output} holds no published run (no {RUNS}/)")
    runs = read_manifests(out)
    runs = [m for m in runs if "counts" in m and (dt is None or m.get("dt") == dt)]
    if not runs:
        raise FileNotFoundError(f"no run of {dt} in {output}" if dt else f"no run in {output}")
    return RunManifest.from_json(max(runs, key=lambda m: (m.get("started_at", ""), m["run_id"])))


def _table(
    out: Output, name: str, columns: list[str], dt: str | None = None, where: pads.Expression | None = None
) -> pa.Table | None:
    ds = out.dataset(name)
    if ds is None:
        return None
    cols = [c for c in columns if c in ds.schema.names or c == "dt"]
    cond = (pads.field("dt") == dt) if dt else None
    if where is not None:
        cond = where if cond is None else (cond & where)
    return ds.to_table(columns=cols, filter=cond)


# ---------------------------------------------------------------- charts (inline SVG, no script)


def _summary_sections(m: RunManifest, output: str) -> list[str]:
    """The header, the counts with failures by kind, and the time per stage."""
    esc, c, t = html.escape, m.counts, m.timing
    rows = [
        ("input units", c.input_units),
        ("units processed", c.units_processed),
        ("units already in the output", c.units_skipped),
        ("units changed (rows replaced)", c.units_replaced),
        ("units to retry next run", len(c.units_to_retry)),
        ("images", c.images),
        ("images ok", c.images_ok),
        ("images failed", c.images_failed),
        ("faces", c.faces),
    ]
    if m.cluster and "identities" in m.cluster:
        rows.append(("identities (whole archive)", m.cluster["identities"]))
    if m.score and "outliers" in m.score:
        rows.append(("outliers flagged", m.score["outliers"]))
    table = lambda rs: "".join(f"<tr><td>{esc(k)}</td><td class=n>{v}</td></tr>" for k, v in rs)  # noqa: E731
    fails = sorted(c.failures_by_status.items())
    stages = t.stage_task_s
    total = sum(stages.values()) or 1.0
    stage_rows = "".join(
        f"<tr><td>{esc(k)}</td><td class=n>{v:.1f} s</td><td class=n>{100 * v / total:.0f}%</td></tr>"
        for k, v in stages.items()
    )
    return [
        f"<h1>facepipe run {esc(m.run_id)} — {esc(m.dt)}</h1>",
        f"<p>Output <code>{esc(m.output or output)}</code>; started {esc(m.started_at or '?')}; "
        f"detector <code>{esc(m.detector)}</code>, embedder <code>{esc(m.embedder)}</code>.</p>",
        f'<section id="summary"><h2>Counts</h2><table>{table(rows)}</table>'
        f'<h3>Failures by kind</h3><table id="failures-by-kind">{table(fails) or "<tr><td>none</td></tr>"}'
        "</table></section>",
        f'<section id="stages"><h2>Time</h2><table>{stage_rows}'
        f"<tr><td>listing</td><td class=n>{t.list_s:.1f} s</td><td></td></tr>"
        f"<tr><td>pipeline (wall)</td><td class=n>{t.pipeline_s:.1f} s</td><td "
        f"class=n>{t.images_per_s or 0} images/s</td></tr>"
        "</table><p>Stage times are task seconds summed over workers; stages overlap.</p></section>",
    ]


def _charts_section(tables: dict, cfg: ReportConfig) -> tuple[str, list[tuple[str, float, bool]]]:
    """The distributions, and the top outliers (face id, score, flagged) for the gallery."""
    images, faces, identities, outliers = (tables[k] for k in ("images", "faces", "identities", "face_outliers"))
    charts, top = [], []
    ok = images.filter(pc.equal(images.column("status"), "ok")) if images is not None else None
    if ok is not None and ok.num_rows:
        n_faces = ok.column("n_faces").to_numpy(zero_copy_only=False)
        charts.append(count_chart(n_faces, f"faces per image ({ok.num_rows} images)", 10))
    if faces is not None and faces.num_rows:
        labels, counts, _ = histogram(faces.column("det_score").to_numpy(zero_copy_only=False), 0.0, 1.0, 20)
        charts.append(bar_chart(labels, counts, f"detection score ({faces.num_rows} faces)"))
    if identities is not None and identities.num_rows:
        sizes = identities.column("n_faces").to_numpy(zero_copy_only=False)
        charts.append(count_chart(sizes, f"faces per identity ({identities.num_rows} identities)", 20))
    if outliers is not None and outliers.num_rows:
        sc = outliers.column("outlier_score").to_numpy(zero_copy_only=False).astype(np.float64)
        thr = float(np.median(outliers.column("threshold").to_numpy(zero_copy_only=False)))
        lo, hi = float(min(sc.min(), thr)), float(max(sc.max(), thr))
        hi = hi if hi > lo else lo + 1.0
        labels, counts, edges = histogram(sc, lo, hi, 24)
        title = f"outlier score ({outliers.num_rows} faces; higher = less like a face)"
        charts.append(
            bar_chart(
                labels, counts, title, marker=(thr - lo) / (edges[1] - edges[0]), marker_label=f"threshold {thr:.3g}"
            )
        )
        fid, flagged = outliers.column("face_id").to_pylist(), outliers.column("is_outlier").to_pylist()
        why = outliers.column("reason").to_pylist() if "reason" in outliers.column_names else [None] * len(fid)
        # the flagged faces first (highest score first), then the highest-scored faces that were not
        order = sorted(range(len(fid)), key=lambda i: (not flagged[i], -sc[i], fid[i]))
        top = [(fid[i], float(sc[i]), bool(flagged[i]), why[i]) for i in order[: cfg.outliers]]
    html_ = '<section id="charts"><h2>Distributions</h2><div class="charts">'
    return html_ + ("".join(charts) or "<p>no data</p>") + "</div></section>", top


def _largest_identities(tables: dict, cfg: ReportConfig) -> tuple[list[tuple[int, str]], dict[str, list[str]]]:
    identities, face_identity = tables["identities"], tables["face_identity"]
    if identities is None or face_identity is None or not identities.num_rows:
        return [], {}
    pairs = zip(identities.column("n_faces").to_pylist(), identities.column("identity_id").to_pylist())
    top = sorted(pairs, key=lambda p: (-p[0], p[1]))[: cfg.identities]
    ids = pa.array([i for _, i in top], pa.string())
    keep = face_identity.filter(pc.is_in(face_identity.column("identity_id"), value_set=ids))
    members: dict[str, list[str]] = {}
    for f, ident in zip(keep.column("face_id").to_pylist(), keep.column("identity_id").to_pylist()):
        members.setdefault(ident, []).append(f)
    return top, members


def _face_boxes(out: Output, shown: list[str]) -> tuple[dict, dict]:
    """(face id -> (x1, y1, x2, y2, det_score), face id -> source uri) of the faces shown."""
    if not shown:
        return {}, {}
    cols = ["face_id", "image_id", "x1", "y1", "x2", "y2", "det_score"]
    sel = _table(out, "faces", cols, where=pads.field("face_id").isin(shown))
    image_ids = sorted(set(sel.column("image_id").to_pylist()))
    imgs = _table(out, "images", ["image_id", "source_uri"], where=pads.field("image_id").isin(image_ids))
    uri_of = dict(zip(imgs.column("image_id").to_pylist(), imgs.column("source_uri").to_pylist()))
    box, src = {}, {}
    for f, i, x1, y1, x2, y2, score in zip(*(sel.column(k).to_pylist() for k in cols)):
        box[f], src[f] = (x1, y1, x2, y2, score), uri_of.get(i)
    return box, src


def _gallery_sections(out: Output, m: dict, tables: dict, top_out: list, cfg: ReportConfig) -> list[str]:
    """The largest identities' best faces and the top outliers, as thumbnails."""
    esc = html.escape
    top_ids, members = _largest_identities(tables, cfg)
    box, src = _face_boxes(out, sorted({f for fs_ in members.values() for f in fs_} | {f for f, *_ in top_out}))
    best = lambda ident: sorted((f for f in members.get(ident, []) if f in box), key=lambda f: -box[f][4])  # noqa: E731
    groups = [(ident, n, best(ident)[: cfg.faces_per_identity]) for n, ident in top_ids]
    wanted = [f for _, _, fs_ in groups for f in fs_] + [f for f, *_ in top_out if f in box]
    wanted = [f for f in wanted if src.get(f)]
    thumbs = thumbnails(m, [(src[f], box[f][:4]) for f in wanted])
    thumb_of = {f: thumbs.get((src[f], k)) for k, f in enumerate(wanted)}
    ident_html = "".join(
        f'<div class="ident"><div class="id">{esc(ident)} — {n} faces</div><div class="gallery">'
        + "".join(face_tile(thumb_of.get(f), f"score {box[f][4]:.2f}") for f in fs_)
        + "</div></div>"
        for ident, n, fs_ in groups
    )
    out_html = "".join(
        face_tile(thumb_of.get(f), f"{s:.3g} {('flagged: ' + r if r else 'flagged') if o else 'not flagged'}")
        for f, s, o, r in top_out
    )
    n_flagged = sum(o for _, _, o, _ in top_out)
    note = (
        f"<p>{n_flagged} flagged face{'s' if n_flagged != 1 else ''} shown (left out of the identities), then the "
        "highest-scored faces that were not flagged.</p>"
        if top_out
        else ""
    )
    return [
        f'<section id="identities"><h2>Largest identities</h2>{ident_html or "<p>no identities yet</p>"}</section>',
        f'<section id="outliers"><h2>Outliers</h2>{note}'
        f'<div class="gallery">{out_html or "<p>no scores</p>"}</div></section>',
    ]


def _failed_section(images: pa.Table | None, cfg: ReportConfig) -> str:
    esc = html.escape
    failed = images.filter(pc.not_equal(images.column("status"), "ok")) if images is not None else None
    rows = list(zip(*(failed.column(k).to_pylist() for k in ("source_uri", "status", "error")))) if failed else []
    frows = "".join(
        f"<tr><td><code>{esc(uri)}</code></td><td>{esc(st)}</td><td class=err>{esc(err or '')}</td></tr>"
        for uri, st, err in rows[: cfg.failures]
    )
    more = len(rows) - cfg.failures if len(rows) > cfg.failures else 0
    table = f"<table><tr><th>source</th><th>status</th><th>error</th></tr>{frows}</table>" if frows else "<p>none</p>"
    tail = f"<p>and {more} more (query the images table)</p>" if more else ""
    return f'<section id="failed-inputs"><h2>Failed inputs</h2>{table}{tail}</section>'


def render(
    output: str, dt: str | None = None, run_id: str | None = None, cfg: ReportConfig = ReportConfig()
) -> tuple[str, RunManifest]:
    """The report's HTML and the manifest it describes."""
    esc = html.escape
    m = find_manifest(output, dt, run_id)
    dt = m.dt
    out = Output.open(output)  # the encryption setting, read once for every table
    tables = {
        "images": _table(out, "images", ["image_id", "source_uri", "status", "error", "n_faces", "dt"], dt),
        "faces": _table(out, "faces", ["det_score"], dt),
        "face_outliers": _table(
            out, "face_outliers", ["face_id", "outlier_score", "is_outlier", "threshold", "reason", "dt"], dt
        ),
        "identities": _table(out, "identities", ["identity_id", "n_faces"]),
        "face_identity": _table(out, "face_identity", ["face_id", "identity_id"]),
    }
    charts, top_out = _charts_section(tables, cfg)
    sec = [*_summary_sections(m, output), charts, *_gallery_sections(out, m, tables, top_out, cfg)]
    sec.append(_failed_section(tables["images"], cfg))
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>facepipe {esc(m.run_id)} {esc(dt)}</title>"
        '<meta http-equiv="Content-Security-Policy" content="default-src \'none\'; img-src data:; style-src '
        "'unsafe-inline'\">"
        f"<style>{CSS}</style></head><body>{''.join(sec)}<p class=l>made {made} by facepipe report</p></body></html>"
    )
    return page, m


def write_report(
    output: str,
    dt: str | None = None,
    run_id: str | None = None,
    dest: str | None = None,
    cfg: ReportConfig = ReportConfig(),
) -> str:
    """Render and write the report (default ``OUT/_runs/RUN_ID.html``); returns where."""
    page, m = render(output, dt, run_id, cfg)
    if dest:
        fs, path = fsio.resolve(dest)
        fsio.write_bytes(fs, path, page.encode())
        return dest
    out = Output(output)
    out.atomic_write(out.path(RUNS, f"{m.run_id}.html"), page.encode())
    return out.uri_of(RUNS, f"{m.run_id}.html")
