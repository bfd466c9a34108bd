"""Embed stage: detected faces -> aligned chips -> one embedding per face.

``embed_batch`` is the pure core: for every image with faces it decodes the kept encoded bytes at
full resolution (chips are cut from the original pixels, not the detector-sized ones), aligns
each face (:mod:`facepipe.align.stage`), warps all chips of the batch in one call and embeds them
in batches. Ray adapters: ``FaceActor`` (default) runs detection, alignment and embedding in one
actor pool, so each actor loads the three models once and nothing travels between pools;
``DetectActor`` + ``EmbedActor`` are the two-pool layout (``ComputeConfig.embed_pool``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from facepipe.align.stage import AlignConfig, align_image, cut_chips, resolve_method
from facepipe.decode import DecodeConfig, decode_image
from facepipe.detect.stage import DETECTED_SCHEMA, DetectConfig, detect_batch
from facepipe.embed.base import FaceEmbedder

log = logging.getLogger(__name__)

#: Rows leaving the face actors: DETECTED_SCHEMA plus each image's embeddings.
EMBEDDED_SCHEMA = pa.schema(
    [
        *DETECTED_SCHEMA,
        pa.field("embedder", pa.string()),
        pa.field("align", pa.string()),
        pa.field("embedding_dim", pa.int32()),
        pa.field("embeddings", pa.list_(pa.float32())),  # n_faces * embedding_dim, face-major
        pa.field("t_embed", pa.float64()),
    ]
)


@dataclass(frozen=True)
class EmbedConfig:
    """Embedder choice.

    name / weights: a registered embedder (``dlib_resnet``, ``arcface_r50``, ``arcface_r100``) and
    optionally its weights (local path or ``s3://``; required for ArcFace).
    align: how faces are cut (``facepipe.align.stage.AlignConfig``). batch_size: chips per forward
    pass. device: "auto" (CUDA when the actor has a GPU), "cpu" or "cuda".
    """

    name: str = "dlib_resnet"
    weights: str | None = None
    align: AlignConfig = AlignConfig()
    batch_size: int = 32
    device: str = "auto"


def embed_batch(
    detected: pa.Table, data: list, embedder: FaceEmbedder, predictor, cfg: EmbedConfig, decode: DecodeConfig
) -> pa.Table:
    """DETECTED_SCHEMA rows + each row's encoded bytes -> EMBEDDED_SCHEMA rows."""
    t0 = time.perf_counter()
    method = resolve_method(cfg.align.method, embedder.chip)
    full = DecodeConfig(max_pixels=decode.max_pixels, long_side=0)
    n = detected.num_rows
    counts = detected.column("n_faces").to_pylist()
    boxes = detected.column("boxes").to_pylist()
    lms = detected.column("landmarks").to_pylist()
    regions = []
    for i in range(n):
        if not counts[i]:
            continue
        image = decode_image(bytes(data[i]), full).pixels
        b = np.asarray(boxes[i], np.float32).reshape(-1, 4)
        lm = np.asarray(lms[i], np.float32).reshape(-1, 5, 2)
        regions += align_image(image, b, lm, embedder.chip, method, predictor)
    device = next(embedder.parameters()).device
    vecs = embedder.embed(cut_chips(regions, embedder.chip, device), cfg.batch_size)
    offsets = np.concatenate([[0], np.cumsum(counts)])
    t_embed = (time.perf_counter() - t0) / max(n, 1)
    align_id = method if method != "dlib_sp5" or predictor is None else f"dlib_sp5:{predictor.model_id}"
    extra = {
        "embedder": pa.array([embedder.model_id] * n, pa.string()),
        "align": pa.array([align_id] * n, pa.string()),
        "embedding_dim": pa.array([embedder.dim] * n, pa.int32()),
        "embeddings": pa.array(
            [vecs[offsets[i] : offsets[i + 1]].reshape(-1) for i in range(n)], pa.list_(pa.float32())
        ),
        "t_embed": pa.array(np.full(n, t_embed), pa.float64()),
    }
    return pa.Table.from_arrays([*detected.columns, *extra.values()], schema=EMBEDDED_SCHEMA)


def resolve_device(device: str) -> str:
    import torch

    return ("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else device


class DetectActor:
    """Ray actor of the two-pool layout: detection only; the encoded bytes travel on with the rows
    (as a ``data`` column) to the :class:`EmbedActor` pool."""

    def __init__(self, detect: DetectConfig, torch_threads: int | None = None) -> None:
        from facepipe.registry import create_model

        _threads(torch_threads)
        self.cfg = detect
        self.detector = create_model(
            detect.name, detect.weights, device=resolve_device(detect.device), kind="detector", config=detect.config
        )

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        detected = detect_batch(batch, self.detector, self.cfg)
        return detected.append_column(pa.field("data", pa.binary()), pa.array(list(batch["data"]), pa.binary()))


class EmbedActor:
    """Ray actor: shape predictor and embedder loaded once; aligns and embeds detected rows."""

    def __init__(self, embed: EmbedConfig, decode: DecodeConfig, torch_threads: int | None = None) -> None:
        from facepipe.registry import create_model

        _threads(torch_threads)
        self.cfg, self.decode_cfg = embed, decode
        self.embedder = create_model(embed.name, embed.weights, device=resolve_device(embed.device), kind="embedder")
        method = resolve_method(embed.align.method, self.embedder.chip)
        self.predictor = create_model("dlib_shape_predictor_5", kind="landmarks") if method == "dlib_sp5" else None
        log.info("embed actor: %s (%s)", self.embedder.model_id, method)

    def embed(self, detected: pa.Table, data: list) -> pa.Table:
        return embed_batch(detected, data, self.embedder, self.predictor, self.cfg, self.decode_cfg)

    def __call__(self, table: pa.Table) -> pa.Table:
        return self.embed(table.drop_columns(["data"]), table.column("data").to_pylist())


class FaceActor:
    """Ray actor of the default one-pool layout: each decoded batch is detected, aligned and
    embedded in the same actor (``detect_batch`` then ``embed_batch``)."""

    def __init__(
        self, detect: DetectConfig, embed: EmbedConfig, decode: DecodeConfig, torch_threads: int | None = None
    ) -> None:
        from facepipe.registry import create_model

        _threads(torch_threads)
        self.detect_cfg = detect
        self.detector = create_model(
            detect.name, detect.weights, device=resolve_device(detect.device), kind="detector", config=detect.config
        )
        self.embedder = EmbedActor(embed, decode)

    def __call__(self, batch: dict[str, np.ndarray]) -> pa.Table:
        detected = detect_batch(batch, self.detector, self.detect_cfg)
        return self.embedder.embed(detected, list(batch["data"]))


def _threads(n: int | None) -> None:
    if n:
        import torch

        torch.set_num_threads(n)
