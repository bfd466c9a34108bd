"""The model actors: where the detector, the shape predictor, the embedder and the face verifier are loaded once and
the stages' pure batch functions are called one after the other (Ray's batch-inference pattern:
load in ``__init__``, map a batch in ``__call__``).

- ``FaceActor`` (default): detect -> align -> embed in one actor, so each actor loads the three
  models once and nothing travels between pools.
- ``DetectActor`` + ``EmbedActor``: the two-pool layout (``ComputeConfig.embed_pool``); the
  encoded bytes travel on with the rows as a ``data`` column.

Chips are cut from the full-resolution image: images with faces are decoded again from the
encoded bytes the rows kept. Each actor resolves the align method for its embedder once, at
construction (the driver checked it fits, ``facepipe.run.startup``). ``device`` is the run's
``ComputeConfig.device``, for every model of the actor. The extract chain that calls them is
``facepipe.run.steps``'s.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import pyarrow as pa

from facepipe.schema import EMBEDDED
from facepipe.stages.align.quality import quality_columns
from facepipe.stages.align.stage import align_batch, resolve_method
from facepipe.stages.decode import DecodeConfig, decode_image
from facepipe.stages.detect.stage import DetectConfig, detect_batch
from facepipe.stages.embed.base import FaceEmbedder
from facepipe.stages.embed.stage import EmbedConfig, embedding_columns
from facepipe.stages.score.onet import CROP, square_crops

log = logging.getLogger(__name__)


def embed_detected(
    detected: pa.Table,
    data: list,
    embedder: FaceEmbedder,
    predictor,
    verifier,
    method: str,
    batch_size: int,
    max_pixels: int,
) -> pa.Table:
    """``schema.DETECTED`` rows + each row's encoded bytes -> ``schema.EMBEDDED`` rows: the images
    with faces decoded at full resolution, their faces aligned (``method``) and embedded, their
    quality features measured (``facepipe.stages.align.quality``) and checked by the face ``verifier``
    (``facepipe.stages.score.onet``)."""
    t0 = time.perf_counter()
    full = DecodeConfig(max_pixels=max_pixels, long_side=0)
    counts = detected.column("n_faces").to_pylist()
    with_faces = [i for i, c in enumerate(counts) if c]
    boxes, lms = detected.column("boxes").to_pylist(), detected.column("landmarks").to_pylist()
    images = [decode_image(bytes(data[i]), full).pixels for i in with_faces]
    face_boxes = [np.asarray(boxes[i], np.float32).reshape(-1, 4) for i in with_faces]
    device = next(embedder.parameters()).device
    chips, quality = align_batch(
        images,
        face_boxes,
        [np.asarray(lms[i], np.float32).reshape(-1, 5, 2) for i in with_faces],
        embedder.chip,
        method,
        predictor,
        device,
    )
    crops = [square_crops(im, b) for im, b in zip(images, face_boxes)]
    face_logit = verifier.face_logits(np.concatenate(crops) if crops else np.zeros((0, CROP, CROP, 3), np.uint8))
    vectors = embedder.embed(chips, batch_size)
    align_id = f"dlib_sp5:{predictor.model_id}" if method == "dlib_sp5" and predictor is not None else method
    t_embed = (time.perf_counter() - t0) / max(len(counts), 1)
    values = {**quality_columns(quality), "face_logit": face_logit}
    cols = embedding_columns(counts, vectors, values, embedder.model_id, align_id, t_embed)
    return pa.Table.from_arrays([*detected.columns, *cols.values()], schema=EMBEDDED)


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)


def _detector(cfg: DetectConfig, device: str):
    from facepipe.registry import create_model

    return create_model(cfg.name, cfg.weights, device=resolve_device(device), kind="detector", config=cfg.config)


class DetectActor:
    """Two-pool layout, first pool: detection only; the encoded bytes travel on with the rows."""

    def __init__(self, detect: DetectConfig, device: str = "auto", torch_threads: int | None = None) -> None:
        _threads(torch_threads)
        self.cfg = detect
        self.detector = _detector(detect, device)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        detected = detect_batch(batch, self.detector, self.cfg)
        return detected.append_column(pa.field("data", pa.binary()), pa.array(list(batch["data"]), pa.binary()))


class EmbedActor:
    """Shape predictor and embedder loaded once; aligns and embeds detected rows."""

    def __init__(
        self, embed: EmbedConfig, decode: DecodeConfig, device: str = "auto", torch_threads: int | None = None
    ) -> None:
        from facepipe.registry import create_model

        _threads(torch_threads)
        self.cfg, self.max_pixels = embed, decode.max_pixels
        self.embedder = create_model(embed.name, embed.weights, device=resolve_device(device), kind="embedder")
        self.method = resolve_method(embed.align.method, self.embedder.chip)  # once, not per batch
        self.predictor = create_model("dlib_shape_predictor_5", kind="landmarks") if self.method == "dlib_sp5" else None
        self.verifier = create_model("mtcnn_onet", device=resolve_device(device), kind="verifier")
        log.info("embed actor: %s (%s), verifier %s", self.embedder.model_id, self.method, self.verifier.model_id)

    def embed(self, detected: pa.Table, data: list) -> pa.Table:
        return embed_detected(
            detected,
            data,
            self.embedder,
            self.predictor,
            self.verifier,
            self.method,
            self.cfg.batch_size,
            self.max_pixels,
        )

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.embed(table.drop_columns(["data"]), table.column("data").to_pylist())


class FaceActor:
    """Default one-pool layout: each decoded batch is detected, aligned and embedded here."""

    def __init__(
        self,
        detect: DetectConfig,
        embed: EmbedConfig,
        decode: DecodeConfig,
        device: str = "auto",
        torch_threads: int | None = None,
    ) -> None:
        _threads(torch_threads)
        self.detect_cfg = detect
        self.detector = _detector(detect, device)
        self.aligner = EmbedActor(embed, decode, device)  # align + verify + embed

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        detected = detect_batch(batch, self.detector, self.detect_cfg)
        return self.aligner.embed(detected, list(batch["data"]))
