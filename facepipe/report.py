"""The run report: one self-contained HTML file that shows what a night's run did.

``facepipe report --output OUT [--dt DATE] [--run-id ID]`` (and ``facepipe run --report``, which
the nightly job passes) writes ``OUT/_runs/RUN_ID.html`` beside the run's manifest. Everything is
inline -- CSS, SVG charts, JPEG thumbnails as data URIs -- so the file opens anywhere, offline,
and makes no request. Sections (each an element with the id in brackets):

- counts and failures by kind [summary], time per stage [stages];
- charts [charts]: faces per image, detection scores, identity sizes, DROCC scores with the
  threshold;
- the largest identities as face thumbnails cut from the source images [identities];
- the top outliers with their scores [outliers];
- every failed input with its error [failed-inputs].

No embedding value is shown; thumbnails are of faces the output already names (the report is as
sensitive as the output it is made from: keep it beside it, under the same access rules).
"""

from __future__ import annotations

import base64
import html
import json
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from facepipe.io import fs as fsio
from facepipe.io.output import RUNS, Output

THUMB = 96  # thumbnail side, pixels


@dataclass(frozen=True)
class ReportConfig:
    """identities: how many of the largest identities to show, faces_per_identity: thumbnails
    each; outliers: how many top outliers; failures: failed inputs listed (the rest counted)."""

    identities: int = 8
    faces_per_identity: int = 8
    outliers: int = 16
    failures: int = 200


def find_manifest(output: str, dt: str | None = None, run_id: str | None = None) -> dict:
    """The manifest of ``run_id``, or of the latest run (of date ``dt`` when given)."""
    out = Output(output)  # the manifests are plain JSON: no need for the encryption setting
    if run_id:
        try:
            return json.loads(fsio.read_bytes(out.fs, out.path(RUNS, f"{run_id}.json")))
        except FileNotFoundError:
            raise FileNotFoundError(f"no run {run_id} in {output} (no {RUNS}/{run_id}.json)") from None
    if not out.exists(RUNS):
        raise FileNotFoundError(f"{output} holds no published run (no {RUNS}/)")
    runs = [json.loads(fsio.read_bytes(out.fs, f)) for f in out.files(RUNS, suffix=".json")]
    runs = [m for m in runs if "counts" in m and (dt is None or m.get("dt") == dt)]
    if not runs:
        raise FileNotFoundError(f"no run of {dt} in {output}" if dt else f"no run in {output}")
    return max(runs, key=lambda m: (m.get("started_at", ""), m["run_id"]))


def _table(
    output: str, name: str, columns: list[str], dt: str | None = None, where: pads.Expression | None = None
) -> pa.Table | None:
    ds = Output.open(output).dataset(name)
    if ds is None:
        return None
    cols = [c for c in columns if c in ds.schema.names or c == "dt"]
    cond = (pads.field("dt") == dt) if dt else None
    if where is not None:
        cond = where if cond is None else (cond & where)
    return ds.to_table(columns=cols, filter=cond)


# ---------------------------------------------------------------- charts (inline SVG, no script)


def bar_chart(
    labels: list[str],
    values: list[float],
    title: str,
    marker: float | None = None,
    marker_label: str = "",
    width: int = 460,
    height: int = 200,
) -> str:
    """A bar chart as an inline ``<svg>``; ``marker`` draws a vertical line at that bar
    position (fractional index), e.g. a threshold."""
    n = max(1, len(values))
    top = max(values) if values and max(values) > 0 else 1
    left, bottom, pad = 40, 30, 18
    w, h = width - left - 8, height - bottom - pad
    bw = w / n
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="{html.escape(title)}">',
        f'<text x="{left}" y="12" class="t">{html.escape(title)}</text>',
        f'<line x1="{left}" y1="{pad + h}" x2="{left + w}" y2="{pad + h}" class="axis"/>',
        f'<text x="{left - 4}" y="{pad + 8}" class="l" text-anchor="end">{top:g}</text>',
        f'<text x="{left - 4}" y="{pad + h}" class="l" text-anchor="end">0</text>',
    ]
    every = max(1, n // 8)
    for i, (lab, v) in enumerate(zip(labels, values)):
        bh = h * v / top
        parts.append(
            f'<rect x="{left + i * bw + 1:.1f}" y="{pad + h - bh:.1f}" width="{max(bw - 2, 1):.1f}" '
            f'height="{bh:.1f}" class="bar"><title>{html.escape(lab)}: {v:g}</title></rect>'
        )
        if i % every == 0:
            parts.append(
                f'<text x="{left + (i + 0.5) * bw:.1f}" y="{pad + h + 14}" class="l" '
                f'text-anchor="middle">{html.escape(lab)}</text>'
            )
    if marker is not None:
        x = left + marker * bw
        right = x > left + 0.6 * w  # label on the side with room
        parts.append(
            f'<line x1="{x:.1f}" y1="{pad}" x2="{x:.1f}" y2="{pad + h}" class="marker"/>'
            f'<text x="{x - 3 if right else x + 3:.1f}" y="{pad + 10}" class="m" '
            f'text-anchor="{"end" if right else "start"}">{html.escape(marker_label)}</text>'
        )
    parts.append("</svg>")
    return "".join(parts)


def histogram(values: np.ndarray, lo: float, hi: float, bins: int) -> tuple[list[str], list[float], np.ndarray]:
    edges = np.linspace(lo, hi, bins + 1)
    counts, _ = np.histogram(np.clip(values, lo, hi), edges)
    return [f"{e:.2g}" for e in edges[:-1]], counts.astype(float).tolist(), edges


def _count_chart(values: np.ndarray, title: str, cap: int) -> str:
    """Bars for 0, 1, ..., cap-1 and 'cap+' (faces per image, identity sizes)."""
    v = np.minimum(np.asarray(values, np.int64), cap)
    counts = np.bincount(v, minlength=cap + 1)
    labels = [str(i) for i in range(cap)] + [f"{cap}+"]
    return bar_chart(labels, counts.astype(float).tolist(), title)


# ---------------------------------------------------------------- thumbnails


def _thumbs(manifest: dict, faces: list[tuple[str, tuple[float, float, float, float]]]) -> dict[tuple[str, int], str]:
    """(source_uri, index) -> data URI of a JPEG thumbnail of that face box, read from the source."""
    import cv2

    from facepipe.decode import DecodeConfig, DecodeFailure, decode_image
    from facepipe.io.sources import ReadConfig, read_unit, unit_of

    read = manifest.get("config", {}).get("read", {})
    cfg = ReadConfig(image_column=read.get("image_column", "image"), id_column=read.get("id_column"))
    by_unit: dict = {}
    for uri, _ in faces:
        by_unit.setdefault(unit_of(uri), set()).add(uri)
    data: dict[str, bytes] = {}
    for unit, wanted in by_unit.items():
        try:
            for row in read_unit(unit, cfg):
                if row["source_uri"] in wanted and row["data"] is not None:
                    data[row["source_uri"]] = row["data"]
        except Exception:  # a source gone since the run: no thumbnail, the report still renders
            continue
    pixels: dict[str, np.ndarray] = {}
    out = {}
    for k, (uri, (x1, y1, x2, y2)) in enumerate(faces):
        if uri not in data:
            continue
        if uri not in pixels:
            try:
                pixels[uri] = decode_image(data[uri], DecodeConfig(long_side=0)).pixels
            except DecodeFailure:
                continue
        img = pixels[uri]
        m = 0.25 * max(x2 - x1, y2 - y1)
        cx1, cy1 = int(max(0, x1 - m)), int(max(0, y1 - m))
        cx2, cy2 = int(min(img.shape[1], x2 + m)), int(min(img.shape[0], y2 + m))
        if cx2 <= cx1 or cy2 <= cy1:
            continue
        crop = img[cy1:cy2, cx1:cx2]
        s = THUMB / max(crop.shape[:2])
        crop = cv2.resize(
            crop, (max(1, round(crop.shape[1] * s)), max(1, round(crop.shape[0] * s))), interpolation=cv2.INTER_AREA
        )
        ok, enc = cv2.imencode(".jpg", crop[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            out[(uri, k)] = "data:image/jpeg;base64," + base64.b64encode(enc.tobytes()).decode()
    return out


# ---------------------------------------------------------------- the page

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:24px;color:#222;max-width:1100px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
table{border-collapse:collapse}td,th{padding:3px 10px;border-bottom:1px solid #eee;text-align:left}
td.n{text-align:right;font-variant-numeric:tabular-nums}
.charts{display:flex;flex-wrap:wrap;gap:16px}.t{font-size:12px;font-weight:600}.l{font-size:10px;fill:#555}
.bar{fill:#4a7bd0}.axis{stroke:#999}.marker{stroke:#d33;stroke-width:2}.m{font-size:10px;fill:#d33}
.gallery{display:flex;flex-wrap:wrap;gap:6px}.face{width:96px;text-align:center;font-size:10px}
.face img{width:96px;height:96px;object-fit:contain;background:#f3f3f3;display:block}
.ident{margin:8px 0}.ident .id{font-family:monospace;font-size:12px}
.err{font-family:monospace;font-size:12px;color:#933}
.missing{width:96px;height:96px;background:#eee;display:flex;align-items:center;justify-content:center;color:#999}
"""


def _face_tile(src: str | None, caption: str) -> str:
    img = f'<img src="{src}" alt="face">' if src else '<div class="missing">n/a</div>'
    return f'<div class="face">{img}<div>{html.escape(caption)}</div></div>'


def render(
    output: str, dt: str | None = None, run_id: str | None = None, cfg: ReportConfig = ReportConfig()
) -> tuple[str, dict]:
    """The report's HTML and the manifest it describes."""
    m = find_manifest(output, dt, run_id)
    dt = m["dt"]
    c, t = m["counts"], m.get("timing", {})
    images = _table(output, "images", ["image_id", "source_uri", "status", "error", "n_faces", "dt"], dt)
    day_faces = _table(output, "faces", ["det_score"], dt)
    outliers = _table(output, "face_outliers", ["face_id", "drocc_score", "is_outlier", "threshold", "dt"], dt)
    identities = _table(output, "identities", ["identity_id", "n_faces"])
    face_identity = _table(output, "face_identity", ["face_id", "identity_id"])

    esc = html.escape
    sec: list[str] = [
        f"<h1>facepipe run {esc(m['run_id'])} — {esc(dt)}</h1>",
        f"<p>Output <code>{esc(m.get('output', output))}</code>; started {esc(m.get('started_at', '?'))}; "
        f"detector <code>{esc(str(m.get('detector')))}</code>, embedder "
        f"<code>{esc(str(m.get('embedder')))}</code>.</p>",
    ]
    rows = [
        ("input units", c.get("input_units")),
        ("units processed", c.get("units_processed")),
        ("units already in the output", c.get("units_skipped")),
        ("units changed (rows replaced)", c.get("units_replaced")),
        ("units to retry next run", len(c.get("units_to_retry", []))),
        ("images", c.get("images")),
        ("images ok", c.get("images_ok")),
        ("images failed", c.get("images_failed")),
        ("faces", c.get("faces")),
    ]
    if isinstance(m.get("cluster"), dict) and "identities" in m["cluster"]:
        rows.append(("identities (whole archive)", m["cluster"]["identities"]))
    if isinstance(m.get("score"), dict) and "outliers" in m["score"]:
        rows.append(("outliers flagged", m["score"]["outliers"]))
    fails = c.get("failures_by_status", {})
    sec.append(
        '<section id="summary"><h2>Counts</h2><table>'
        + "".join(f"<tr><td>{esc(k)}</td><td class=n>{v}</td></tr>" for k, v in rows)
        + "</table>"
        '<h3>Failures by kind</h3><table id="failures-by-kind">'
        + (
            "".join(f"<tr><td>{esc(k)}</td><td class=n>{v}</td></tr>" for k, v in sorted(fails.items()))
            or "<tr><td>none</td></tr>"
        )
        + "</table></section>"
    )
    stages = t.get("stage_task_s", {})
    total = sum(stages.values()) or 1.0
    sec.append(
        '<section id="stages"><h2>Time</h2><table>'
        + "".join(
            f"<tr><td>{esc(k)}</td><td class=n>{v:.1f} s</td><td class=n>{100 * v / total:.0f}%</td></tr>"
            for k, v in stages.items()
        )
        + f"<tr><td>listing</td><td class=n>{t.get('list_s', 0):.1f} s</td><td></td></tr>"
        + f"<tr><td>pipeline (wall)</td><td class=n>{t.get('pipeline_s', 0):.1f} s</td><td "
        f"class=n>{t.get('images_per_s') or 0} images/s</td></tr>"
        + "</table><p>Stage times are task seconds summed over workers; stages overlap.</p></section>"
    )

    charts = []
    ok_imgs = images.filter(pc.equal(images.column("status"), "ok")) if images is not None else None
    if ok_imgs is not None and ok_imgs.num_rows:
        charts.append(
            _count_chart(
                ok_imgs.column("n_faces").to_numpy(zero_copy_only=False),
                f"faces per image ({ok_imgs.num_rows} images)",
                10,
            )
        )
    if day_faces is not None and day_faces.num_rows:
        labels, counts, _ = histogram(day_faces.column("det_score").to_numpy(zero_copy_only=False), 0.0, 1.0, 20)
        charts.append(bar_chart(labels, counts, f"detection score ({day_faces.num_rows} faces)"))
    if identities is not None and identities.num_rows:
        charts.append(
            _count_chart(
                identities.column("n_faces").to_numpy(zero_copy_only=False),
                f"faces per identity ({identities.num_rows} identities)",
                20,
            )
        )
    top_out: list[tuple[str, float, bool]] = []
    if outliers is not None and outliers.num_rows:
        sc = outliers.column("drocc_score").to_numpy(zero_copy_only=False).astype(np.float64)
        thr = float(np.median(outliers.column("threshold").to_numpy(zero_copy_only=False)))
        lo, hi = float(min(sc.min(), thr)), float(max(sc.max(), thr))
        hi = hi if hi > lo else lo + 1.0
        labels, counts, edges = histogram(sc, lo, hi, 24)
        charts.append(
            bar_chart(
                labels,
                counts,
                f"DROCC score ({outliers.num_rows} faces; higher = more anomalous)",
                marker=(thr - lo) / (edges[1] - edges[0]),
                marker_label=f"threshold {thr:.3g}",
            )
        )
        order = np.argsort(-sc)[: cfg.outliers]
        fid, flag = outliers.column("face_id").to_pylist(), outliers.column("is_outlier").to_pylist()
        top_out = [(fid[i], float(sc[i]), bool(flag[i])) for i in order]
    sec.append(
        '<section id="charts"><h2>Distributions</h2><div class="charts">'
        + ("".join(charts) or "<p>no data</p>")
        + "</div></section>"
    )

    # faces to show: the largest identities' best faces, and the top outliers
    top_ids: list[tuple[int, str]] = []
    members: dict[str, list[str]] = {}
    if identities is not None and face_identity is not None and identities.num_rows:
        top_ids = sorted(
            zip(identities.column("n_faces").to_pylist(), identities.column("identity_id").to_pylist()),
            key=lambda p: (-p[0], p[1]),
        )[: cfg.identities]
        keep = face_identity.filter(
            pc.is_in(face_identity.column("identity_id"), value_set=pa.array([i for _, i in top_ids], pa.string()))
        )
        for f, ident in zip(keep.column("face_id").to_pylist(), keep.column("identity_id").to_pylist()):
            members.setdefault(ident, []).append(f)
    shown = sorted({f for fs_ in members.values() for f in fs_} | {f for f, _, _ in top_out})
    box, src = {}, {}
    if shown:
        sel = _table(
            output,
            "faces",
            ["face_id", "image_id", "x1", "y1", "x2", "y2", "det_score"],
            where=pads.field("face_id").isin(shown),
        )
        imgs = _table(
            output,
            "images",
            ["image_id", "source_uri"],
            where=pads.field("image_id").isin(sorted(set(sel.column("image_id").to_pylist()))),
        )
        uri_of = dict(zip(imgs.column("image_id").to_pylist(), imgs.column("source_uri").to_pylist()))
        for f, i, x1, y1, x2, y2, sc_ in zip(
            *(sel.column(k).to_pylist() for k in ("face_id", "image_id", "x1", "y1", "x2", "y2", "det_score"))
        ):
            box[f] = (x1, y1, x2, y2, sc_)
            src[f] = uri_of.get(i)
    groups = [
        (
            ident,
            n,
            sorted((f for f in members.get(ident, []) if f in box), key=lambda f: -box[f][4])[: cfg.faces_per_identity],
        )
        for n, ident in top_ids
    ]
    wanted = [f for _, _, fs_ in groups for f in fs_] + [f for f, _, _ in top_out if f in box]
    wanted = [f for f in wanted if src.get(f)]
    thumbs = _thumbs(m, [(src[f], box[f][:4]) for f in wanted])
    thumb_of = {f: thumbs.get((src[f], k)) for k, f in enumerate(wanted)}
    ident_html = "".join(
        f'<div class="ident"><div class="id">{esc(ident)} — {n} faces</div><div class="gallery">'
        + "".join(_face_tile(thumb_of.get(f), f"score {box[f][4]:.2f}") for f in fs_)
        + "</div></div>"
        for ident, n, fs_ in groups
    )
    sec.append(
        f'<section id="identities"><h2>Largest identities</h2>{ident_html or "<p>no identities yet</p>"}</section>'
    )
    out_html = "".join(_face_tile(thumb_of.get(f), f"{s:.3g}{' outlier' if flag else ''}") for f, s, flag in top_out)
    sec.append(
        '<section id="outliers"><h2>Top outliers</h2><div '
        f'class="gallery">{out_html or "<p>no scores</p>"}</div></section>'
    )

    failed = images.filter(pc.not_equal(images.column("status"), "ok")) if images is not None else None
    frows = []
    if failed is not None:
        for uri, st, err in list(zip(*(failed.column(k).to_pylist() for k in ("source_uri", "status", "error"))))[
            : cfg.failures
        ]:
            frows.append(
                f"<tr><td><code>{esc(uri)}</code></td><td>{esc(st)}</td><td class=err>{esc(err or '')}</td></tr>"
            )
    more = (failed.num_rows - cfg.failures) if failed is not None and failed.num_rows > cfg.failures else 0
    sec.append(
        '<section id="failed-inputs"><h2>Failed inputs</h2>'
        + (
            f"<table><tr><th>source</th><th>status</th><th>error</th></tr>{''.join(frows)}</table>"
            if frows
            else "<p>none</p>"
        )
        + (f"<p>and {more} more (query the images table)</p>" if more else "")
        + "</section>"
    )
    made = datetime.now(timezone.utc).isoformat(timespec="seconds")
    page = (
        f"<!doctype html><html lang=en><head><meta charset=utf-8><title>facepipe {esc(m['run_id'])} {esc(dt)}</title>"
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
    out.atomic_write(out.path(RUNS, f"{m['run_id']}.html"), page.encode())
    return out.uri_of(RUNS, f"{m['run_id']}.html")
