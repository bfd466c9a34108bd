"""Identities on real faces: a labelled set built from photos that ship offline, and the clustering
methods and thresholds measured on it over many face orders.

    .venv/bin/python -m bench.accuracy.cluster_real [--orders 20] [--shared ../shared]

The set (``real_set``; reproducible, cached under ``~/.cache/facepipe/cluster_real.npz``): the demo
photos -- Obama in five photos, Biden, Eileen Collins (astronaut), Grace Hopper, Tom Hanks and the
six people of insightface's t1.jpg -- and the four PASCAL photos of ``../shared`` (18 more people).
Each photo also goes through realistic changes, seeded: a crop around its faces, half and double
scale, JPEG quality 30, greyscale, a mirror image, darker and brighter light, and one of each
combined with another. Every version goes through the job's own path (decode, CenterFace, dlib's
shape predictor and chip, dlib's ResNet); a face is labelled with the person of the original face
its box lands on (the original's faces are the labels: the demo photos' people by file, t1's and
the PASCAL photos' by face, each a different person), and keeps its image id (``PHOTO/VERSION``:
two faces of one version are two people -- the cannot-link the clustering must respect).

Prints per method and threshold, over ``--orders`` random orders of the faces: the worst and mean
BCubed precision, the mean BCubed recall and F, the pairwise precision and recall, and in how many
orders two people were merged.
"""

from __future__ import annotations

import argparse
import csv
import io
import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench import record
from facepipe.model_files import cache_dir

CACHE = cache_dir("cluster_real.npz")
PERSON = {  # demo photo -> person; t1.jpg's faces are six people, labelled by face
    "obama.jpg": "obama",
    "obama2.jpg": "obama",
    "obama3.jpg": "obama",
    "obama_partial_face.jpg": "obama",
    "obama_partial_face2.jpg": "obama",
    "biden.jpg": "biden",
    "astronaut.png": "collins",
    "grace_hopper.jpg": "hopper",
    "Tom_Hanks_54745.png": "hanks",
}


@dataclass
class RealSet:
    x: np.ndarray  # (N, 128) float32 dlib embeddings
    labels: np.ndarray  # (N,) person
    image_ids: np.ndarray  # (N,) "PHOTO/VERSION"
    widths: np.ndarray  # (N,) face box width in the version's pixels


def versions(image: np.ndarray, boxes: np.ndarray, rng: np.random.Generator) -> list[tuple[str, np.ndarray, object]]:
    """(name, image, box mapper) for the photo and its changed versions; the mapper takes original
    boxes (N, 4) to the version's pixels."""
    import cv2

    h, w = image.shape[:2]
    same = lambda b: b  # noqa: E731
    x0, y0 = (max(0, int(boxes[:, 0].min() - 0.3 * w * rng.uniform(0.2, 1))), max(0, int(boxes[:, 1].min() * 0.5)))
    x1 = min(w, int(boxes[:, 2].max() + 0.3 * w * rng.uniform(0.2, 1)))
    y1 = min(h, int(boxes[:, 3].max() + (h - boxes[:, 3].max()) * 0.5))
    crop = (image[y0:y1, x0:x1], lambda b: b - np.array([x0, y0, x0, y0], np.float32))

    def jpeg(img: np.ndarray, q: int) -> np.ndarray:
        ok, enc = cv2.imencode(".jpg", cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
        return cv2.cvtColor(cv2.imdecode(enc, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)

    def scaled(f: float):
        return cv2.resize(image, None, fx=f, fy=f, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_CUBIC), (
            lambda b: b * f
        )

    grey = cv2.cvtColor(cv2.cvtColor(image, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
    mirror = (image[:, ::-1].copy(), lambda b: np.stack([w - b[:, 2], b[:, 1], w - b[:, 0], b[:, 3]], 1))
    light = lambda g: np.clip(255.0 * (image / 255.0) ** g, 0, 255).astype(np.uint8)  # noqa: E731
    return [
        ("original", image, same),
        ("crop", *crop),
        ("half", *scaled(0.5)),
        ("double", *scaled(2.0)),
        ("jpeg30", jpeg(image, 30), same),
        ("grey", grey, same),
        ("mirror", *mirror),
        ("dark", light(1.8), same),
        ("bright", light(0.55), same),
        ("grey-jpeg40", jpeg(grey, 40), same),
        ("mirror-dark", np.clip(255.0 * (mirror[0] / 255.0) ** 1.6, 0, 255).astype(np.uint8), mirror[1]),
    ]


def real_set(shared: Path, rebuild: bool = False, archive: Path | None = None, min_face: int = 40) -> RealSet:
    """The labelled faces (see the module doc); cached. ``archive``: also write every version as
    ``ARCHIVE/images/PHOTO__VERSION.png`` and ``ARCHIVE/labels.csv`` (source_uri, face_index,
    label) of its faces at least ``min_face`` wide -- a photo archive for ``facepipe run`` and
    ``facepipe eval-cluster``."""
    if CACHE.exists() and not rebuild and archive is None:
        z = np.load(CACHE, allow_pickle=False)
        return RealSet(z["x"], z["labels"], z["image_ids"], z["widths"])
    import cv2

    from facepipe.registry import create_model
    from facepipe.stages.align.stage import align_batch
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import DetectConfig, detect_images
    from facepipe.tools import demo
    from facepipe.tools.evaluate import iou_matrix

    det = create_model("centerface", kind="detector")
    sp = create_model("dlib_shape_predictor_5", kind="landmarks")
    net = create_model("dlib_resnet", kind="embedder")
    photos = {n: p.read_bytes() for n, p in sorted(demo.photos().items())}
    photos |= {f"pascal/{p.name}": p.read_bytes() for p in sorted((shared / "data/pascal_faces_dev").glob("*.jpg"))}
    rng = np.random.default_rng(0)

    def faces(img: np.ndarray):
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        d = decode_image(buf.getvalue(), DecodeConfig())
        (f,) = detect_images(det, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], DetectConfig())
        return f

    xs, labels, image_ids, widths, rows = [], [], [], [], []
    if archive is not None:
        (archive / "images").mkdir(parents=True, exist_ok=True)
    for name, data in photos.items():
        image = decode_image(data, DecodeConfig(long_side=0)).pixels
        ref = faces(image)
        who = [PERSON.get(name, f"{name}#{k}") for k in range(len(ref))]
        for vname, img, mapper in versions(image, ref.boxes, rng):
            f = faces(np.ascontiguousarray(img))
            if not len(f):
                continue
            iou = iou_matrix(f.boxes, mapper(ref.boxes).astype(np.float32))
            keep = iou.max(1) >= 0.5
            chips, _ = align_batch(
                [np.ascontiguousarray(img)], [f.boxes[keep]], [f.landmarks[keep]], net.chip, "dlib_sp5", sp
            )
            xs.append(net.embed(chips))
            labels += [who[j] for j in iou[keep].argmax(1)]
            image_ids += [f"{name}/{vname}"] * int(keep.sum())
            widths += (f.boxes[keep, 2] - f.boxes[keep, 0]).tolist()
            if archive is not None:
                path = archive / "images" / f"{name.replace('/', '_')}__{vname}.png"
                cv2.imwrite(str(path), cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_RGB2BGR))
                for k in np.flatnonzero(keep):
                    if f.boxes[k, 2] - f.boxes[k, 0] >= min_face:
                        rows.append((str(path), int(k), who[int(iou[k].argmax())]))
    s = RealSet(
        np.concatenate(xs).astype(np.float32), np.array(labels), np.array(image_ids), np.array(widths, np.float32)
    )
    CACHE.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(CACHE, x=s.x, labels=s.labels, image_ids=s.image_ids, widths=s.widths)
    if archive is not None:
        with open(archive / "labels.csv", "w", newline="") as fh:
            csv.writer(fh).writerows([("source_uri", "face_index", "label"), *rows])
    return s


def infomap_labels(idx: np.ndarray, dist: np.ndarray, threshold: float, seed: int = 0) -> np.ndarray:
    """The map equation (Rosvall & Bergstrom 2008; the ``infomap`` package) on the kNN links shorter
    than ``threshold``, weighted by how much shorter (1 - d / threshold), two-level."""
    import infomap

    from facepipe.stages.cluster.methods import _relabel, threshold_edges

    n = len(idx)
    src, dst = threshold_edges(idx, dist, threshold)
    w = 1.0 - dist.ravel()[((dist < threshold) & (idx >= 0)).ravel()] / threshold
    im = infomap.Infomap(f"--two-level --silent --seed {seed + 1} --num-trials 1", directed=False)
    for i in range(n):
        im.add_node(i)
    for a, b, ww in zip(src.tolist(), dst.tolist(), w.tolist()):
        im.add_link(a, b, max(ww, 1e-6))
    im.run()
    mods = im.get_modules()
    return _relabel(np.array([mods.get(i, -1 - i) for i in range(n)]))


#: the stage's clustering without its second pass (facepipe.stages.cluster.linkage)
FIRST_PASS = "chinese_whispers, first pass only"


def method_labels(
    name: str, x: np.ndarray, threshold: float | str, image_ids: np.ndarray, k: int = 10, fdr: float | None = None
) -> np.ndarray:
    """``fdr``: the stage's methods' ``ClusterConfig.fdr`` (None: its default)."""
    from facepipe.stages.cluster.graph import IndexConfig, build_index
    from facepipe.stages.cluster.methods import chinese_whispers
    from facepipe.stages.cluster.stage import METHODS, ClusterConfig, cluster_embeddings
    from facepipe.stages.cluster.threshold import AUTO, auto_threshold

    if threshold == AUTO and name not in METHODS:  # the stage's methods choose it themselves
        threshold = auto_threshold(x).value

    if name == "chinese_whispers (order as given)":
        idx, dist = build_index(x, IndexConfig()).search(np.arange(len(x)), k)
        return chinese_whispers(idx, dist, threshold)
    if name == "infomap (order as given)":
        idx, dist = build_index(x, IndexConfig()).search(np.arange(len(x)), k)
        return infomap_labels(idx, dist, threshold)
    if name == "chinese_whispers + cannot-link (order as given)":
        from facepipe.stages.cluster.constraints import cannot_link, split_same_image

        idx, dist = build_index(x, IndexConfig()).search(np.arange(len(x)), k)
        lab = chinese_whispers(idx, cannot_link(idx, dist, np.arange(len(x)), image_ids), threshold)
        return split_same_image(lab, x, image_ids, np.ones(len(x), bool))
    more = {} if fdr is None else {"fdr": fdr}
    if name == FIRST_PASS:
        cfg = ClusterConfig(threshold=threshold, k=k, second_pass=False, **more)
        return cluster_embeddings(x, cfg, image_ids=image_ids)
    return cluster_embeddings(x, ClusterConfig(threshold=threshold, method=name, k=k, **more), image_ids=image_ids)


def over_orders(
    s: RealSet, name: str, threshold: float, orders: int, k: int = 10, min_face: int = 0, fdr: float | None = None
) -> dict[str, float]:
    """``name`` over ``orders`` random orders of the faces at least ``min_face`` wide (as the
    stage's ``--cluster-min-face``: narrower faces are not clustered, nor counted here); ``fdr``
    as :func:`method_labels`."""
    from facepipe.stages.cluster.metrics import evaluate_clusters

    keep = s.widths >= min_face
    s = RealSet(s.x[keep], s.labels[keep], s.image_ids[keep], s.widths[keep])
    rng = np.random.default_rng(0)
    reps, results = [], set()
    for _ in range(orders):
        perm = rng.permutation(len(s.x))
        lab = np.empty(len(s.x), np.int64)
        lab[perm] = method_labels(name, s.x[perm], threshold, s.image_ids[perm], k, fdr)
        pred = [f"u{i}" if v < 0 else int(v) for i, v in enumerate(lab)]
        reps.append(evaluate_clusters(pred, s.labels.tolist()))
        results.add(frozenset(frozenset(np.flatnonzero(lab == v)) for v in set(lab.tolist()) if v >= 0))
    bp = [r.bcubed_precision for r in reps]
    return {
        "worst_bp": min(bp),
        "bp": float(np.mean(bp)),
        "br": float(np.mean([r.bcubed_recall for r in reps])),
        "bf": float(np.mean([r.bcubed_f for r in reps])),
        "pp": float(np.mean([r.pairwise_precision for r in reps])),
        "pr": float(np.mean([r.pairwise_recall for r in reps])),
        "merged_orders": sum(r.merged_label_errors > 0 for r in reps),
        "most_merged": max(r.merged_label_errors for r in reps),
        "distinct": len(results),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--orders", type=int, default=20)
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    ap.add_argument("--rebuild", action="store_true")
    ap.add_argument("--methods", default="chinese_whispers (order as given),chinese_whispers,infomap")
    ap.add_argument(
        "--thresholds", default="0.4,0.45,0.5,0.55,0.6", help="distances, or auto (see --cluster-threshold)"
    )
    ap.add_argument("--k", default="10", help="kNN graph sizes, comma-separated")
    ap.add_argument("--min-face", default="0,40", help="--cluster-min-face values, comma-separated")
    a = ap.parse_args()
    from facepipe.stages.cluster.threshold import threshold_setting

    s = real_set(Path(a.shared), a.rebuild)
    people, sizes = np.unique(s.labels, return_counts=True)
    print(
        f"{len(s.x)} faces of {len(people)} people ({sizes.min()}-{sizes.max()} each), {len(set(s.image_ids))} images"
    )
    print(f"\nover {a.orders} random orders of the faces:\n")
    print("| method | min face | faces | k | threshold | BCubed P, worst | BCubed P / R / F, mean | pairwise P / R "
          "| orders with a merge | distinct results |\n|---|---|---|---|---|---|---|---|---|---|")  # fmt: skip
    ints = lambda v: [int(x) for x in v.split(",")]  # noqa: E731
    for name, mf, k, t in itertools.product(
        a.methods.split(","), ints(a.min_face), ints(a.k), (threshold_setting(v) for v in a.thresholds.split(","))
    ):
        r = over_orders(s, name, t, a.orders, k, mf)
        record.numbers(**{f"{name} min_face={mf} k={k} threshold={t}": r})
        print(
            f"| {name} | {mf} | {int((s.widths >= mf).sum())} | {k} | {t} | {r['worst_bp']:.4f} | "
            f"{r['bp']:.4f} / {r['br']:.4f} / {r['bf']:.4f} | {r['pp']:.4f} / {r['pr']:.4f} | "
            f"{r['merged_orders']} | {r['distinct']} |"
        )


if __name__ == "__main__":
    record.run(main, "bench.accuracy.cluster_real")
