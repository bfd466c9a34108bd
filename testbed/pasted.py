"""A reproducible benchmark archive: real faces pasted into large real backgrounds, with ground truth.

    .venv/bin/python testbed/pasted.py OUT_DIR [--images 120] [--seed 0]

Faces: every face of the test photos that *both* CenterFace and dlib's HOG detector find (so the
truth favours neither tool), cut with a margin of one face width and pasted at a random scale
(face width 40-400 px) and position, 0-6 per image (15% of images have none). Backgrounds:
scikit-image photos without people, enlarged to 1-12 MP with a little noise. JPEG quality 85-95.
Ground truth box of a pasted face: the two detectors' boxes averaged, moved with the paste.
Writes ``OUT_DIR/images/*.jpg`` and ``OUT_DIR/truth.json`` ({file: [[x1, y1, x2, y2], ...]}).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

BACKGROUNDS = (
    "coffee",
    "chelsea",
    "rocket",
    "coins",
    "horse",
    "page",
    "brick",
    "grass",
    "gravel",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
)


def agreed_faces() -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(name, RGB photo, (N, 4) boxes) of each demo photo: the faces *both* CenterFace and dlib's
    HOG detector find (IoU >= 0.3), their two boxes averaged."""
    import dlib

    from facepipe.registry import create_model
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import DetectConfig, detect_images
    from facepipe.tools import demo
    from facepipe.tools.evaluate import iou_matrix

    det = create_model("centerface", kind="detector")
    hog = dlib.get_frontal_face_detector()
    out = []
    for name, path in sorted(demo.photos().items()):
        data = path.read_bytes()
        small = decode_image(data, DecodeConfig(long_side=640))
        full = decode_image(data, DecodeConfig(long_side=0)).pixels
        (f,) = detect_images(
            det, [small.pixels], [(small.scale_x, small.scale_y)], [(small.width, small.height)], DetectConfig()
        )
        h = np.array([[r.left(), r.top(), r.right() + 1, r.bottom() + 1] for r in hog(full, 1)], np.float32).reshape(
            -1, 4
        )
        boxes = []
        if len(f) and len(h):
            iou = iou_matrix(f.boxes, h)
            boxes = [(f.boxes[i] + h[j]) / 2 for i, j in enumerate(iou.argmax(1)) if iou[i, j] >= 0.3]
        out.append((name, full, np.array(boxes, np.float32).reshape(-1, 4)))
    return out


def face_crops(seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """(crop RGB, face box inside the crop) for every face both detectors agree on."""
    out = []
    for _name, full, boxes in agreed_faces():
        for box in boxes:
            w = box[2] - box[0]
            x0, y0 = int(max(0, box[0] - w)), int(max(0, box[1] - w))
            x1, y1 = int(min(full.shape[1], box[2] + w)), int(min(full.shape[0], box[3] + w))
            out.append((full[y0:y1, x0:x1].copy(), box - np.array([x0, y0, x0, y0], np.float32)))
    return out


def build(out_dir: str | Path, n_images: int = 120, seed: int = 0) -> dict[str, list[list[float]]]:
    import cv2
    from skimage import data as skd

    rng = np.random.default_rng(seed)
    out = Path(out_dir)
    (out / "images").mkdir(parents=True, exist_ok=True)
    crops = face_crops(seed)
    backs = []
    for name in BACKGROUNDS:
        im = getattr(skd, name)()
        im = np.dstack([im] * 3) if im.ndim == 2 else im[..., :3]
        backs.append(np.ascontiguousarray(im.astype(np.uint8)))
    truth: dict[str, list[list[float]]] = {}
    for k in range(n_images):
        mp = rng.uniform(1, 12) * 1e6
        back = backs[k % len(backs)]
        aspect = back.shape[1] / back.shape[0]
        H = int(np.sqrt(mp / aspect))
        W = int(H * aspect)
        img = cv2.resize(back, (W, H), interpolation=cv2.INTER_CUBIC).astype(np.int16)
        img = np.clip(img + rng.normal(0, 3, img.shape), 0, 255).astype(np.uint8)
        n_faces = 0 if rng.random() < 0.15 else int(rng.integers(1, 7))
        boxes: list[list[float]] = []
        for _ in range(n_faces):
            crop, fbox = crops[int(rng.integers(len(crops)))]
            fw = fbox[2] - fbox[0]
            s = rng.uniform(40, min(400, W / 4)) / fw
            c = cv2.resize(crop, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
            b = fbox * s
            if c.shape[0] >= H or c.shape[1] >= W:
                continue
            for _try in range(20):  # avoid covering an earlier face
                x, y = int(rng.integers(0, W - c.shape[1])), int(rng.integers(0, H - c.shape[0]))
                nb = [b[0] + x, b[1] + y, b[2] + x, b[3] + y]
                if all(
                    nb[2] + c.shape[1] / 3 < o[0]
                    or nb[0] - c.shape[1] / 3 > o[2]
                    or nb[3] + c.shape[0] / 3 < o[1]
                    or nb[1] - c.shape[0] / 3 > o[3]
                    for o in boxes
                ):
                    img[y : y + c.shape[0], x : x + c.shape[1]] = c
                    boxes.append([float(v) for v in nb])
                    break
        name = f"bench-{k:04d}.jpg"
        ok, enc = cv2.imencode(".jpg", img[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(85, 96))])
        (out / "images" / name).write_bytes(enc.tobytes())
        truth[name] = boxes
    (out / "truth.json").write_text(json.dumps(truth))
    return truth


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("out")
    ap.add_argument("--images", type=int, default=120)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    truth = build(a.out, a.images, a.seed)
    print(f"{len(truth)} images, {sum(map(len, truth.values()))} pasted faces -> {a.out}")


if __name__ == "__main__":
    main()
