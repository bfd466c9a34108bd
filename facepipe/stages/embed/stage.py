"""Embed stage: aligned face chips -> one embedding per face, as columns of the image rows.

The model itself (``FaceEmbedder.embed``) maps (N, S, S, 3) uint8 chips to (N, D) float32; this
module holds the stage's config and turns a batch's vectors into the columns ``schema.EMBEDDING_FIELDS``
adds to each image row. Cutting the chips is the align stage's; running both in one actor is
``facepipe.run.actors``'s.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa

from facepipe.flags import flag, positive_int
from facepipe.schema import EMBEDDING_FIELDS, FACE_VALUES
from facepipe.stages.align.stage import AlignConfig


@dataclass(frozen=True)
class EmbedConfig:
    """Embedder choice.

    name / weights: a registered embedder (``dlib_resnet``, ``arcface_r50``, ``arcface_r100``) and
    optionally its weights (local path or ``s3://``; required for ArcFace).
    align: how faces are cut (``facepipe.stages.align.stage.AlignConfig``). batch_size: chips per forward
    pass.
    """

    name: str = flag(
        "dlib_resnet", "--embedder", "registered embedder: dlib_resnet (built in), arcface_r50, arcface_r100"
    )
    weights: str | None = flag(
        None, "--embedder-weights", "embedder weights, local path or s3:// (required for ArcFace)"
    )
    align: AlignConfig = AlignConfig()
    batch_size: int = flag(32, "--embed-batch-size", "face chips per embedder forward pass", type=positive_int)


def embedding_columns(
    counts: list[int],
    vectors: np.ndarray,
    face_values: dict[str, np.ndarray],
    embedder_id: str,
    align_id: str,
    t_embed: float,
) -> dict[str, pa.Array]:
    """The columns of ``schema.EMBEDDING_FIELDS`` for a batch of images, by name.

    counts: faces per image (n images); vectors (sum(counts), D) float32 and ``face_values``
    (``schema.FACE_VALUES``' names -> (sum(counts), width) float32), the faces in image order;
    t_embed: seconds of stage time attributed to each image row.
    """
    n, dim = len(counts), vectors.shape[1]
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    nf = int(offsets[-1])

    def per_image(values: np.ndarray, width: int) -> pa.Array:
        v = np.asarray(values, np.float32).reshape(nf, width)
        return pa.array([v[offsets[i] : offsets[i + 1]].reshape(-1) for i in range(n)], pa.list_(pa.float32()))

    cols = {
        "embedder": pa.array([embedder_id] * n, pa.string()),
        "align": pa.array([align_id] * n, pa.string()),
        "embedding_dim": pa.array([dim] * n, pa.int32()),
        "embeddings": per_image(vectors, dim),
        **{name: per_image(face_values[name], width) for name, width in FACE_VALUES.items()},
        "t_embed": pa.array(np.full(n, t_embed), pa.float64()),
    }
    return {f.name: cols[f.name] for f in EMBEDDING_FIELDS}
