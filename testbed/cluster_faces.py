"""Synthetic faces for the cluster stage's tests: well-separated people, face ids, and a faces
partition with the columns the stage reads (the extract job writes more)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

DIM = 128


def people(n_people: int, per_person: int, seed: int = 0, spread: float = 0.3, apart: float = 1.0):
    """Well-separated synthetic people: centres ~``apart`` apart, faces ~``spread`` from each other."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(n_people, DIM)) * apart / np.sqrt(2 * DIM)
    x = np.concatenate([c + rng.normal(size=(per_person, DIM)) * spread / np.sqrt(2 * DIM) for c in centres])
    return x.astype(np.float32), np.repeat(np.arange(n_people), per_person)


def face_ids(n: int) -> list[str]:
    return [f"face{i:05d}" for i in range(n)]


def faces_table(face_ids: list[str], x: np.ndarray) -> pa.Table:
    """A faces partition's rows with the columns the cluster stage reads (the extract job writes more)."""
    n = len(face_ids)
    return pa.table(
        {
            "face_id": pa.array(face_ids, pa.string()),
            "image_id": pa.array([f"img-{f}" for f in face_ids], pa.string()),  # one face per image
            "x1": pa.array(np.zeros(n), pa.float32()),
            "x2": pa.array(np.full(n, 100.0), pa.float32()),
            "det_score": pa.array(np.linspace(0.9, 0.99, n), pa.float32()),
            "embedding": pa.FixedSizeListArray.from_arrays(pa.array(x.reshape(-1), pa.float32()), DIM),
            "embedder": pa.array(["dlib_resnet@test"] * n, pa.string()),
        }
    )


def write_faces(out: Path | str, dt: str, face_ids: list[str], x: np.ndarray, filesystem=None) -> None:
    """A faces partition (``filesystem``: e.g. an S3 one, ``out`` then ``bucket/prefix``)."""
    if filesystem is None:
        (Path(out) / "faces" / f"dt={dt}").mkdir(parents=True, exist_ok=True)
    pq.write_table(faces_table(face_ids, x), f"{out}/faces/dt={dt}/part-{dt}.parquet", filesystem=filesystem)
