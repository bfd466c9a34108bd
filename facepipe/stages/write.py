"""Write stage: detected rows -> Hive-partitioned Parquet tables under OUT.

Layout (``dt`` lives in the path only)::

    OUT/images/dt=YYYY-MM-DD/part-RUN_ID-UUID.parquet
    OUT/faces/dt=YYYY-MM-DD/part-RUN_ID-UUID.parquet
    OUT/_runs/RUN_ID.json

Protocol: write tasks put their files under ``OUT/_staging/RUN_ID/``; when every task has
finished, the driver publishes them (``Output.publish``): it deletes the files a previous attempt
of the *same* run id left in the tables, moves the staged files in, and writes
``_runs/RUN_ID.json`` last.
Other runs' files and partitions are never touched, and a run that dies before publishing leaves
the tables exactly as they were (only its staging prefix, which the next attempt clears).
"""

from __future__ import annotations

import hashlib
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from facepipe import schema
from facepipe.storage.output import Output, as_output, part_name


@dataclass
class BatchStats:
    """What the write stage did with one batch: images, faces, statuses, task seconds per stage,
    the files it staged and the images it could not read."""

    n_images: int = 0
    n_faces: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(schema.STAGES, 0.0))
    files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def to_table(self) -> pa.Table:
        """One schema.STATS_SCHEMA row: how a batch's stats cross Ray Data."""
        row = {
            "n_images": self.n_images,
            "n_faces": self.n_faces,
            "status_counts": [{"status": k, "n": v} for k, v in sorted(self.status_counts.items())],
            **{f"t_{s}": float(self.stage_s.get(s, 0.0)) for s in schema.STAGES},
            "files": self.files,
            "unreadable": self.unreadable,
        }
        return pa.Table.from_pylist([row], schema=schema.STATS_SCHEMA)

    @classmethod
    def from_row(cls, row: dict) -> "BatchStats":
        return cls(
            n_images=row["n_images"],
            n_faces=row["n_faces"],
            status_counts={e["status"]: e["n"] for e in row["status_counts"]},
            stage_s={s: row[f"t_{s}"] for s in schema.STAGES},
            files=list(row["files"]),
            unreadable=list(row["unreadable"]),
        )

    @classmethod
    def total(cls, batches: list["BatchStats"]) -> "BatchStats":
        """The sums over a run's batches (stage seconds rounded to ms)."""
        t = cls()
        for b in batches:
            t.n_images += b.n_images
            t.n_faces += b.n_faces
            for k, v in b.status_counts.items():
                t.status_counts[k] = t.status_counts.get(k, 0) + v
            for k, v in b.stage_s.items():
                t.stage_s[k] = t.stage_s.get(k, 0.0) + v
            t.files += b.files
            t.unreadable += b.unreadable
        t.stage_s = {k: round(v, 3) for k, v in t.stage_s.items()}
        return t


def face_id_for(image_id: str, face_index: int) -> str:
    """Deterministic face id: 32 hex chars of BLAKE2b over ``IMAGE_ID/FACE_INDEX``."""
    return hashlib.blake2b(f"{image_id}/{face_index}".encode(), digest_size=16).hexdigest()


def build_tables(detected: pa.Table, run_id: str) -> dict[str, pa.Table]:
    """``schema.EMBEDDED`` rows (the model actors' output) -> {"images": IMAGES table, "faces":
    faces table}; every column built under its name and matched to the declared schema by name."""
    run = pa.array([run_id] * detected.num_rows, pa.string())
    images = pa.Table.from_arrays(
        [detected.column(f.name) if f.name != "run_id" else run for f in schema.IMAGES],
        schema=schema.IMAGES,
    )
    counts = detected.column("n_faces").to_numpy(zero_copy_only=False).astype(np.int64)
    dims = {d for d, c in zip(detected.column("embedding_dim").to_pylist(), counts) if c}
    if len(dims) > 1:
        raise ValueError(f"one batch holds embeddings of several sizes: {sorted(dims)}")
    faces_schema = schema.faces_schema(dims.pop() if dims else schema.DEFAULT_EMBEDDING_DIM)
    cols = _face_columns(detected, counts, faces_schema.field("embedding").type.list_size, run_id)
    assert set(cols) == set(faces_schema.names), set(cols) ^ set(faces_schema.names)
    faces = pa.Table.from_arrays([cols[f.name] for f in faces_schema], schema=faces_schema)
    return {"images": images, "faces": faces}


def _face_columns(detected: pa.Table, counts: np.ndarray, dim: int, run_id: str) -> dict[str, pa.Array]:
    """The faces table's columns, by name, from the image rows' per-face lists."""
    face_image = np.repeat(np.arange(detected.num_rows), counts)
    nf = int(counts.sum())

    def flat(col: str, k: int) -> np.ndarray:
        """A per-image list column as (faces, k) float32."""
        vals = detected.column(col).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return vals.astype(np.float32).reshape(nf, k)

    def per_face(col: str) -> pa.Array:
        """A per-image value repeated for each of the image's faces."""
        values = detected.column(col).to_pylist()
        return pa.array([values[i] for i in face_image], detected.schema.field(col).type)

    def vectors(values: np.ndarray, k: int) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(values.reshape(-1), pa.float32()), k)

    boxes = flat("boxes", 4)
    face_index = np.concatenate([np.arange(c) for c in counts]) if len(counts) else np.zeros(0, np.int64)
    image_ids = per_face("image_id")
    return {
        "face_id": pa.array([face_id_for(im, int(k)) for im, k in zip(image_ids.to_pylist(), face_index)], pa.string()),
        "image_id": image_ids,
        "face_index": pa.array(face_index, pa.int32()),
        **{c: pa.array(boxes[:, j], pa.float32()) for j, c in enumerate(("x1", "y1", "x2", "y2"))},
        "det_score": pa.array(flat("scores", 1)[:, 0], pa.float32()),
        "landmarks": vectors(flat("landmarks", schema.N_LANDMARK_VALUES), schema.N_LANDMARK_VALUES),
        "detector": per_face("detector"),
        "embedding": vectors(flat("embeddings", dim), dim),
        "embedder": per_face("embedder"),
        "align": per_face("align"),
        **{
            name: vectors(flat(name, k), k) if k > 1 else pa.array(flat(name, 1)[:, 0], pa.float32())
            for name, k in schema.FACE_VALUES.items()
        },
        "run_id": pa.array([run_id] * nf, pa.string()),
    }


def stage_tables(tables: dict[str, pa.Table], out: Output, run_id: str, dt: str) -> list[str]:
    """Write each non-empty table as one Parquet file under the run's staging prefix; returns the
    files' paths relative to it (``TABLE/dt=DT/part-RUN_ID-UUID.parquet``) for ``Output.publish``."""
    files = []
    name = part_name(run_id)
    for table_name, table in tables.items():
        if table.num_rows:
            rel = f"{table_name}/dt={dt}/{name}"
            out.write_table(table, out.staging_path(run_id, rel))
            files.append(rel)
    return files


def write_batch(
    detected: pa.Table, output: str, run_id: str, dt: str, erased_faces: frozenset[str] = frozenset()
) -> pa.Table:
    """Ray adapter body: write one batch's tables into staging; return its ``BatchStats`` as one Arrow row.
    ``erased_faces``: face ids an erasure request removed (``facepipe.tools.erase``), never written again."""
    t0 = time.perf_counter()
    tables = build_tables(detected, run_id)
    if erased_faces and tables["faces"].num_rows:
        faces = tables["faces"]
        tables["faces"] = faces.filter(
            pc.invert(pc.is_in(faces.column("face_id"), value_set=pa.array(sorted(erased_faces), pa.string())))
        )
    files = stage_tables(tables, as_output(output), run_id, dt)
    statuses = detected.column("status").to_pylist()
    return BatchStats(
        n_images=detected.num_rows,
        n_faces=tables["faces"].num_rows,
        status_counts=dict(Counter(statuses)),
        stage_s={
            **{s: float(pc.sum(detected.column(f"t_{s}")).as_py() or 0.0) for s in ("decode", "detect", "embed")},
            "write": time.perf_counter() - t0,
        },
        files=files,
        unreadable=[u for u, st in zip(detected.column("source_uri").to_pylist(), statuses) if st == "read_error"],
    ).to_table()


def read_files(batch: pa.Table, output: Output, columns: list[str], declared: pa.Schema | None = None) -> pa.Table:
    """``columns`` of the published files listed in ``batch``'s ``path`` column, as one table. A
    file written before a column was added (an older schema) gives nulls of its ``declared`` type."""
    return pa.concat_tables([_file_columns(output, p, columns, declared) for p in batch.column("path").to_pylist()])


def _file_columns(output: Output, path: str, columns: list[str], declared: pa.Schema | None) -> pa.Table:
    if declared is None:
        return output.read_table(path, columns=columns)
    file = output.parquet_file(path)  # one open: its footer says which columns it has
    have = set(file.schema_arrow.names)
    t = file.read(columns=[c for c in columns if c in have])
    for c in columns:
        if c not in have:
            t = t.append_column(declared.field(c).with_nullable(True), pa.nulls(t.num_rows, declared.field(c).type))
    return t.select(columns)


def ray_read_files(
    output: Output, paths: list[str], columns: list[str], blocks: int = 16, declared: pa.Schema | None = None
):
    """A Ray dataset of ``columns`` of published table files of ``output``, read through the
    output's encryption setting (Ray Data's own Parquet reader cannot decrypt: it dies reading
    an encrypted file's footer statistics)."""
    import ray.data

    items = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths), blocks)))
    return items.map_batches(
        read_files,
        fn_kwargs={"output": output, "columns": columns, "declared": declared},
        batch_size=1,
        batch_format="pyarrow",
    )


def publish_identities(
    output: Output,
    run_id: str,
    dt: str,
    prev_run: str | None,
    events: pa.Table,
    identities: pa.Table,
    face_identity: pa.Table,
) -> list[str]:
    """The cluster stage's tables, published: events first, the snapshot last, each publish atomic
    (``Output.publish``): a crash between them is repaired by the rerun, which finds the old
    snapshot, recomputes the same events and replaces them. A rerun after the snapshot landed
    (``prev_run`` is this run) sees no change and must not wipe the first attempt's events: it
    appends. Returns the files published."""
    output.clear_staging(run_id, ("identity_events", "identities", "face_identity"))
    staged_events = stage_tables({"identity_events": events}, output, run_id, dt)
    output.publish(run_id, staged_events, tables=("identity_events",), replace=prev_run != run_id)
    staged = stage_tables({"identities": identities, "face_identity": face_identity}, output, run_id, dt)
    output.publish(run_id, staged, tables=("identities", "face_identity"), snapshot=True)
    return sorted(staged_events + staged)
