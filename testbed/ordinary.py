"""A reproducible archive of ordinary photos: portraits and group photos, 0.3-5 MP, faces 60-400 px.

    .venv/bin/python testbed/ordinary.py OUT_DIR [--images 200] [--seed 0] [--shared ../shared]

Sources: the demo photos (facepipe.tools.demo: Obama x5, Biden, Eileen Collins, Grace Hopper, Tom Hanks,
insightface's group photo t1.jpg) and the four PASCAL photos of ``../shared/data/pascal_faces_dev``
(groups and street scenes). Each archive photo is one source photo cropped around a randomly
chosen face (the crop keeps 45-100% of the photo on each side of that face), scaled so that
face is 60-400 px wide (enlarged at most 3x; the photo then limited to 0.3-5 MP), mirrored half the time, its light
changed (gamma 0.7-1.4), and saved as JPEG at quality 75-95.

Truth: the faces that both CenterFace and dlib's HOG detector find on the source photo (the boxes
averaged, so the truth favours neither tool; the demo photos as in testbed/pasted.py), and for
the PASCAL photos their hand-marked boxes; a face counts only when it lies wholly inside the crop.
Writes ``OUT_DIR/images/*.jpg`` and ``OUT_DIR/truth.json`` ({file: [[x1, y1, x2, y2], ...]}).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def sources(shared: Path) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB photo, (N, 4) truth boxes) of every source photo."""
    import cv2

    from facepipe.tools import evaluate
    from testbed.archive import agreed_faces

    out = [(name, img, boxes) for name, img, boxes in agreed_faces() if len(boxes)]
    dev = shared / "data" / "pascal_faces_dev"
    for name, boxes in sorted(evaluate.load_imglab(dev / "training.xml").items()):
        img = cv2.imread(str(dev / name), cv2.IMREAD_COLOR)[..., ::-1]
        out.append((name, np.ascontiguousarray(img), boxes.astype(np.float32)))
    # a partial face's box reaches past the photo's edge: its visible part is the face there
    return [(n, im, np.clip(b, 0, [im.shape[1], im.shape[0]] * 2).astype(np.float32)) for n, im, b in out]


def build(out_dir: str | Path, shared: Path, n_images: int = 200, seed: int = 0) -> dict[str, list[list[float]]]:
    import cv2

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    src = sources(shared)
    truth: dict[str, list[list[float]]] = {}
    for k in range(n_images):
        name, img, boxes = src[k % len(src)]
        H, W = img.shape[:2]
        f = boxes[int(rng.integers(len(boxes)))]
        keep = rng.uniform(0.45, 1.0, 4)  # share of the photo kept left, top, right, bottom of the face
        x0, y0 = int(f[0] * (1 - keep[0])), int(f[1] * (1 - keep[1]))
        x1, y1 = int(np.ceil(f[2] + (W - f[2]) * keep[2])), int(np.ceil(f[3] + (H - f[3]) * keep[3]))
        crop = img[y0:y1, x0:x1]
        s = min(3.0, rng.uniform(60, 400) / (f[2] - f[0]))  # enlarged at most 3x: no mush
        mp = crop.shape[0] * crop.shape[1] * s * s / 1e6
        s *= np.sqrt(min(1.0, 5.0 / mp) * max(1.0, 0.3 / mp))
        out_img = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
        inside = (boxes[:, 0] >= x0) & (boxes[:, 1] >= y0) & (boxes[:, 2] <= x1) & (boxes[:, 3] <= y1)
        b = (boxes[inside] - np.array([x0, y0, x0, y0], np.float32)) * s
        if rng.random() < 0.5:
            out_img = out_img[:, ::-1]
            b = np.stack([out_img.shape[1] - b[:, 2], b[:, 1], out_img.shape[1] - b[:, 0], b[:, 3]], axis=1)
        lut = (255 * (np.arange(256) / 255) ** rng.uniform(0.7, 1.4)).astype(np.uint8)
        out_img = cv2.LUT(np.ascontiguousarray(out_img), lut)
        fname = f"photo-{k:04d}.jpg"
        ok, enc = cv2.imencode(".jpg", out_img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])
        (out / "images" / fname).write_bytes(enc.tobytes())
        truth[fname] = [[round(float(v), 1) for v in row] for row in b]
    (out / "truth.json").write_text(json.dumps(truth))
    return truth


def main() -> None:
    import os

    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    a = ap.parse_args()
    truth = build(a.out, Path(a.shared), a.images, a.seed)
    files = sorted((Path(a.out) / "images").glob("*.jpg"))
    from PIL import Image

    mp = sorted(np.prod(Image.open(f).size) / 1e6 for f in files)
    widths = [b[2] - b[0] for v in truth.values() for b in v]
    print(
        f"{len(truth)} photos ({mp[0]:.2f}-{mp[-1]:.2f} MP, median {np.median(mp):.2f}), "
        f"{len(widths)} faces (width {min(widths):.0f}-{max(widths):.0f} px, median {np.median(widths):.0f}) -> {a.out}"
    )


if __name__ == "__main__":
    main()
