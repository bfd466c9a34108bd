"""Write stage: detected rows -> Hive-partitioned Parquet tables under OUT.

Layout (``dt`` lives in the path only)::

    OUT/images/dt=YYYY-MM-DD/part-RUN_ID-UUID.parquet
    OUT/faces/dt=YYYY-MM-DD/part-RUN_ID-UUID.parquet
    OUT/_runs/RUN_ID.json

Protocol: write tasks put their files under ``OUT/_staging/RUN_ID/``; when every task has
finished, the driver :func:`publish` es: it deletes the files a previous attempt of the *same*
run id left in the tables, moves the staged files in, and writes ``_runs/RUN_ID.json`` last.
Other runs' files and partitions are never touched, and a run that dies before publishing leaves
the tables exactly as they were (only its staging prefix, which the next attempt clears).
"""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from collections import Counter

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs

from facepipe import schema
from facepipe.io import crypto
from facepipe.io import fs as fsio

STATS_SCHEMA = pa.schema(
    [
        pa.field("n_images", pa.int64()),
        pa.field("n_faces", pa.int64()),
        pa.field("status_counts", pa.string()),  # JSON object status -> count
        pa.field("t_decode", pa.float64()),
        pa.field("t_detect", pa.float64()),
        pa.field("t_embed", pa.float64()),
        pa.field("t_write", pa.float64()),
        pa.field("files", pa.list_(pa.string())),
        # source_uri of the images whose bytes could not be read (read_error): their units are retried
        pa.field("unreadable", pa.list_(pa.string())),
    ]
)


def face_id_for(image_id: str, face_index: int) -> str:
    """Deterministic face id: 32 hex chars of BLAKE2b over ``IMAGE_ID/FACE_INDEX``."""
    return hashlib.blake2b(f"{image_id}/{face_index}".encode(), digest_size=16).hexdigest()


def build_tables(detected: pa.Table, run_id: str) -> dict[str, pa.Table]:
    """``schema.EMBEDDED`` rows (the model actors' output) -> {"images": IMAGES table, "faces": faces table}."""
    n = detected.num_rows
    run = pa.array([run_id] * n, pa.string())
    images = pa.Table.from_arrays(
        [detected.column(f.name) if f.name != "run_id" else run for f in schema.IMAGES],
        schema=schema.IMAGES,
    )
    counts = detected.column("n_faces").to_numpy(zero_copy_only=False).astype(np.int64)
    image_ids = detected.column("image_id").to_pylist()
    face_image = np.repeat(np.arange(n), counts)
    face_index = np.concatenate([np.arange(c) for c in counts]) if n else np.zeros(0, np.int64)
    nf = int(counts.sum())

    def flat(col: str, k: int) -> np.ndarray:
        vals = detected.column(col).combine_chunks().flatten().to_numpy(zero_copy_only=False)
        return vals.astype(np.float32).reshape(nf, k)

    boxes, scores, lms = flat("boxes", 4), flat("scores", 1)[:, 0], flat("landmarks", schema.N_LANDMARK_VALUES)
    detector = detected.column("detector").to_pylist()
    embedder = detected.column("embedder").to_pylist()
    align = detected.column("align").to_pylist()
    dims = {d for d, c in zip(detected.column("embedding_dim").to_pylist(), counts) if c}
    if len(dims) > 1:
        raise ValueError(f"one batch holds embeddings of several sizes: {sorted(dims)}")
    dim = dims.pop() if dims else schema.DEFAULT_EMBEDDING_DIM
    faces_schema = schema.faces_schema(dim)
    emb = flat("embeddings", dim) if nf else np.zeros((0, dim), np.float32)
    fimg = [image_ids[i] for i in face_image]
    faces = pa.Table.from_arrays(
        [
            pa.array([face_id_for(im, int(k)) for im, k in zip(fimg, face_index)], pa.string()),
            pa.array(fimg, pa.string()),
            pa.array(face_index, pa.int32()),
            *(pa.array(boxes[:, j], pa.float32()) for j in range(4)),
            pa.array(scores, pa.float32()),
            pa.FixedSizeListArray.from_arrays(pa.array(lms.reshape(-1), pa.float32()), schema.N_LANDMARK_VALUES),
            pa.array([detector[i] for i in face_image], pa.string()),
            pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1), pa.float32()), dim),
            pa.array([embedder[i] for i in face_image], pa.string()),
            pa.array([align[i] for i in face_image], pa.string()),
            pa.array([run_id] * nf, pa.string()),
        ],
        schema=faces_schema,
    )
    return {"images": images, "faces": faces}


def staging_uri(output: str, run_id: str) -> str:
    return fsio.join(output, "_staging", run_id)


def part_name(run_id: str) -> str:
    return f"part-{run_id}-{uuid.uuid4().hex[:16]}.parquet"


def stage_tables(tables: dict[str, pa.Table], output: str, run_id: str, dt: str) -> list[str]:
    """Write each non-empty table as one Parquet file under the run's staging prefix; returns the
    files' paths relative to it (``TABLE/dt=DT/part-RUN_ID-UUID.parquet``) for :func:`publish`."""
    fs, root = fsio.resolve(staging_uri(output, run_id))
    enc = crypto.for_output(output)
    files = []
    name = part_name(run_id)
    for table_name, table in tables.items():
        if table.num_rows == 0:
            continue
        path = f"{root}/{table_name}/dt={dt}/{name}"
        fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        crypto.write_table(table, path, fs, enc, compression="zstd")
        files.append(f"{table_name}/dt={dt}/{name}")
    return files


def write_batch(
    detected: pa.Table, output: str, run_id: str, dt: str, erased_faces: frozenset[str] = frozenset()
) -> pa.Table:
    """Ray adapter body: write one batch's tables into staging; return one STATS_SCHEMA row.
    ``erased_faces``: face ids an erasure request removed (``facepipe.erase``), never written again."""
    t0 = time.perf_counter()
    tables = build_tables(detected, run_id)
    if erased_faces and tables["faces"].num_rows:
        faces = tables["faces"]
        tables["faces"] = faces.filter(
            pc.invert(pc.is_in(faces.column("face_id"), value_set=pa.array(sorted(erased_faces), pa.string())))
        )
    files = stage_tables(tables, output, run_id, dt)
    statuses = Counter(detected.column("status").to_pylist())
    return pa.Table.from_pylist(
        [
            {
                "n_images": detected.num_rows,
                "n_faces": tables["faces"].num_rows,
                "status_counts": json.dumps(dict(statuses), sort_keys=True),
                "t_decode": float(pc.sum(detected.column("t_decode")).as_py() or 0.0),
                "t_detect": float(pc.sum(detected.column("t_detect")).as_py() or 0.0),
                "t_embed": float(pc.sum(detected.column("t_embed")).as_py() or 0.0),
                "t_write": time.perf_counter() - t0,
                "files": files,
                "unreadable": [
                    u
                    for u, st in zip(detected.column("source_uri").to_pylist(), detected.column("status").to_pylist())
                    if st == "read_error"
                ],
            }
        ],
        schema=STATS_SCHEMA,
    )


def _delete_run_files(fs: pafs.FileSystem, table_root: str, run_id: str | None) -> int:
    """Delete the table's files written by ``run_id`` (every part file when None)."""
    infos = fs.get_file_info(pafs.FileSelector(table_root, recursive=True, allow_not_found=True))
    prefix = f"part-{run_id}-" if run_id is not None else "part-"
    n = 0
    for i in infos:
        if i.type == pafs.FileType.File and i.base_name.startswith(prefix):
            fs.delete_file(i.path)
            n += 1
    return n


def clear_staging(output: str, run_id: str, tables: tuple[str, ...] | None = None) -> None:
    """Delete the run's staging prefix. The shared ``_staging`` root stays (another run may be
    writing under it; readers ignore ``_``-prefixed paths). ``tables``: only those tables' staging."""
    fs, root = fsio.resolve(staging_uri(output, run_id))
    for d in [root] if tables is None else [f"{root}/{t}" for t in tables]:
        if fs.get_file_info(d).type != pafs.FileType.NotFound:
            fs.delete_dir(d)
    if tables is not None and fs.get_file_info(root).type != pafs.FileType.NotFound:
        left = fs.get_file_info(pafs.FileSelector(root, recursive=True))
        if not any(i.type == pafs.FileType.File for i in left):
            fs.delete_dir(root)


def publish(
    output: str,
    run_id: str,
    staged_files: list[str],
    tables: tuple[str, ...] = ("images", "faces"),
    snapshot: bool = False,
    replace: bool = True,
) -> dict[str, int]:
    """Move a run's staged files into ``tables``, replacing only those tables' files of the same
    run id (a stage publishes its own tables: extract ``images`` + ``faces``, scoring
    ``face_outliers``). ``snapshot``: the tables are whole-archive snapshots (identities): every
    earlier file of them is replaced, whichever run wrote it. ``replace`` False: add the files and
    delete none (a stage that appends to its own earlier output). Returns files replaced per table."""
    fs, out = fsio.resolve(output)
    stage = fsio.resolve(staging_uri(output, run_id))[1]
    stray = sorted({f.split("/", 1)[0] for f in staged_files} - set(tables))
    if stray:
        raise ValueError(f"staged files of tables {stray} are not among the published tables {tables}")
    replaced = {t: _delete_run_files(fs, f"{out}/{t}", None if snapshot else run_id) if replace else 0 for t in tables}
    for rel in sorted(staged_files):
        dest = f"{out}/{rel}"
        fs.create_dir(dest.rsplit("/", 1)[0], recursive=True)
        fs.move(f"{stage}/{rel}", dest)
    clear_staging(output, run_id, tables)
    return replaced


def table_dataset(output: str, table: str):
    """A published table as a ``pyarrow.dataset`` (``dt`` from the Hive path, as a string), or
    None when the table has no files."""
    import pyarrow.dataset as pads

    fs, out = fsio.resolve(output)
    if fs.get_file_info(f"{out}/{table}").type == pafs.FileType.NotFound:
        return None
    part = pads.partitioning(pa.schema([("dt", pa.string())]), flavor="hive")
    fmt = crypto.dataset_format(crypto.for_output(output))
    ds = pads.dataset(f"{out}/{table}", filesystem=fs, format=fmt, partitioning=part, exclude_invalid_files=True)
    return ds if ds.files else None  # only empty partition folders left (e.g. all rows purged)


def _read_files(batch: pa.Table, output: str, columns: list[str]) -> pa.Table:
    fs, _ = fsio.resolve(output)
    enc = crypto.for_output(output)
    return pa.concat_tables([crypto.read_table(p, fs, enc, columns=columns) for p in batch.column("path").to_pylist()])


def ray_read_files(output: str, paths: list[str], columns: list[str], blocks: int = 16):
    """A Ray dataset of ``columns`` of published table files of ``output``, read through the
    output's encryption setting (Ray Data's own Parquet reader cannot decrypt: it dies reading
    an encrypted file's footer statistics)."""
    import ray.data

    items = ray.data.from_items([{"path": p} for p in paths], override_num_blocks=max(1, min(len(paths), blocks)))
    return items.map_batches(
        _read_files, fn_kwargs={"output": output, "columns": columns}, batch_size=1, batch_format="pyarrow"
    )


def write_manifest(output: str, run_id: str, manifest: dict) -> str:
    """Write ``OUT/_runs/RUN_ID.json`` (the last step of a run); returns its URI."""
    fs, out = fsio.resolve(output)
    fsio.write_bytes(fs, f"{out}/_runs/{run_id}.json", json.dumps(manifest, indent=2, sort_keys=True).encode())
    return fsio.join(output, "_runs", f"{run_id}.json")
