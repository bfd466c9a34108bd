"""The run report's pieces of HTML: inline SVG charts, face thumbnails as data URIs, and the
page's style -- nothing that asks for anything outside the page (``facepipe.tools.report``)."""

from __future__ import annotations

import base64
import html

import numpy as np

from facepipe.run.manifest import RunManifest

THUMB = 96  # thumbnail side, pixels


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


def count_chart(values: np.ndarray, title: str, cap: int) -> str:
    """Bars for 0, 1, ..., cap-1 and 'cap+' (faces per image, identity sizes)."""
    v = np.minimum(np.asarray(values, np.int64), cap)
    counts = np.bincount(v, minlength=cap + 1)
    labels = [str(i) for i in range(cap)] + [f"{cap}+"]
    return bar_chart(labels, counts.astype(float).tolist(), title)


# ---------------------------------------------------------------- thumbnails


def thumbnails(
    manifest: RunManifest, faces: list[tuple[str, tuple[float, float, float, float]]]
) -> dict[tuple[str, int], str]:
    """(source_uri, index) -> data URI of a JPEG thumbnail of that face box, read from the source."""
    import cv2

    from facepipe.stages.decode import DecodeConfig, DecodeFailure, decode_image
    from facepipe.stages.read.sources import ReadConfig, read_unit, unit_of

    read = manifest.config.get("read", {})
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


def face_tile(src: str | None, caption: str) -> str:
    img = f'<img src="{src}" alt="face">' if src else '<div class="missing">n/a</div>'
    return f'<div class="face">{img}<div>{html.escape(caption)}</div></div>'
