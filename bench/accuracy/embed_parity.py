"""How close facepipe's embeddings are to dlib's own pipeline, and how fast they are.

    .venv/bin/python -m bench.accuracy.embed_parity

Needs the test extra (``dlib-bin`` is the reference). On every face CenterFace finds in the test
photos, from the *same* box:

- (b) dlib's reference: dlib's shape predictor -> ``dlib.get_face_chip(150, 0.25)`` ->
  ``compute_face_descriptor``;
- (a) facepipe's default: our predictor port -> our chip -> our ResNet port (``dlib_sp5``);
- (c) facepipe from CenterFace's own landmarks, no predictor (``dlib_landmarks``).

Prints the descriptor distances of (a) and (c) to (b), then per-face embedding time of the torch
port (batched) next to dlib-bin's for the same chips.
"""

from __future__ import annotations

import os
import platform
import time

import numpy as np
import torch

from bench import record


def main() -> None:
    import dlib

    from facepipe.registry import create_model, get_model_spec
    from facepipe.stages.align.shape_predictor import dlib_rects
    from facepipe.stages.align.stage import align_image, cut_chips
    from facepipe.stages.decode import DecodeConfig, decode_image
    from facepipe.stages.detect.stage import DetectConfig, detect_images
    from facepipe.tools import demo

    det = create_model("centerface", kind="detector")
    sp = create_model("dlib_shape_predictor_5", kind="landmarks")
    net = create_model("dlib_resnet", kind="embedder")
    sp_ref = dlib.shape_predictor(str(get_model_spec("dlib_shape_predictor_5").weights.locate()))
    rec_ref = dlib.face_recognition_model_v1(str(get_model_spec("dlib_resnet").weights.locate()))

    dist = {"dlib_sp5": [], "dlib_landmarks": []}
    ref_chips, ref_desc, fulls = [], [], []
    for name, path in demo.photos().items():
        data = path.read_bytes()
        small = decode_image(data, DecodeConfig())
        full = decode_image(data, DecodeConfig(long_side=0)).pixels
        (found,) = detect_images(
            det, [small.pixels], [(small.scale_x, small.scale_y)], [(small.width, small.height)], DetectConfig()
        )
        fulls.append((full, found))
        for method in dist:
            chips = cut_chips(align_image(full, found.boxes, found.landmarks, net.chip, method, sp), net.chip)
            ours = net.embed(chips)
            for k, rect in enumerate(dlib_rects(found.boxes)):
                shape = sp_ref(full, dlib.rectangle(*map(int, rect)))
                rc = dlib.get_face_chip(full, shape, size=150, padding=0.25)
                ref = np.array(rec_ref.compute_face_descriptor(rc), np.float32)
                dist[method].append(float(np.linalg.norm(ours[k] - ref)))
                if method == "dlib_sp5":
                    ref_chips.append(rc)
                    ref_desc.append(ref)
        print(f"{name:28s} faces {len(found):2d}  sp5 " + " ".join(f"{d:.4f}" for d in dist["dlib_sp5"][-len(found) :]))

    print(
        f"\nmachine: {platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"{torch.get_num_threads()} threads"
    )
    print(
        f"faces: {len(ref_chips)} (CenterFace boxes on the test photos), distance to dlib's own pipeline from "
        "the same box:"
    )
    for method, d in dist.items():
        d = np.array(d)
        print(f"  {method:15s} median {np.median(d):.2e}  max {d.max():.2e}  mean {d.mean():.2e}")

    for method in dist:
        t = time.perf_counter()
        for _ in range(3):
            regions = [r for full, f in fulls for r in align_image(full, f.boxes, f.landmarks, net.chip, method, sp)]
            cut_chips(regions, net.chip)
        per = 1e3 * (time.perf_counter() - t) / (3 * len(ref_chips))
        print(f"align {method:15s} {per:6.1f} ms/face (landmarks + geometry + one batched warp per pass)")
    t = time.perf_counter()
    for _ in range(3):
        for full, f in fulls:
            sp.predict(full, dlib_rects(f.boxes))
    print(f"  of which the shape predictor {1e3 * (time.perf_counter() - t) / (3 * len(ref_chips)):6.1f} ms/face")
    chips = np.stack(ref_chips)
    ours = net.embed(chips)
    print(f"ResNet port on dlib's own chips: max |diff| {np.abs(ours - np.stack(ref_desc)).max():.2e}")
    reps = max(1, 256 // len(chips))
    batch = np.concatenate([chips] * reps)
    net.embed(batch[:8])
    for bs in (1, 32):
        t = time.perf_counter()
        net.embed(batch, batch_size=bs)
        print(f"embed (torch port)   {1e3 * (time.perf_counter() - t) / len(batch):6.1f} ms/face, batch {bs}")
    t = time.perf_counter()
    for c in batch[: len(chips) * 2]:
        rec_ref.compute_face_descriptor(c)
    print(f"embed (dlib-bin)     {1e3 * (time.perf_counter() - t) / (len(chips) * 2):6.1f} ms/face, one chip per call")
    t = time.perf_counter()
    rec_ref.compute_face_descriptor(list(batch[:64]))
    print(f"embed (dlib-bin)     {1e3 * (time.perf_counter() - t) / 64:6.1f} ms/face, 64 chips per call")


if __name__ == "__main__":
    record.run(main, "bench.accuracy.embed_parity")
