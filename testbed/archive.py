"""A test archive in every input layout: loose images + the broken corpus, a WebDataset tar, a
Parquet file. Returns the inputs and what the job must report for each source."""

from __future__ import annotations

import io
import tarfile
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from facepipe.config import RunConfig
from facepipe.stages.read.sources import ReadConfig
from facepipe.tools.demo import EXPECTED_FACES
from testbed import corpus

TAR_PHOTOS = ("obama.jpg", "obama2.jpg", "obama3.jpg", "obama_partial_face.jpg", "obama_partial_face2.jpg", "biden.jpg")
PARQUET_PHOTOS = ("t1.jpg", "Tom_Hanks_54745.png")


@dataclass
class Archive:
    inputs: list[str]
    expected_status: dict[str, str]  # source_uri -> status
    expected_faces: dict[str, int]  # source_uri -> faces (photos with known counts only)


def run_config(inputs: list[str], output: str | Path, run_id: str, dt: str = "2026-11-01", **kw) -> RunConfig:
    """A job config over (some of) an archive's inputs: its Parquet file keeps the image bytes in
    ``image`` and the id in ``key``. ``kw``: any other RunConfig field."""
    return RunConfig(
        inputs=tuple(inputs),
        output=str(output),
        dt=dt,
        run_id=run_id,
        read=ReadConfig(image_column="image", id_column="key"),
        **kw,
    )


def build(root: Path, photos: dict[str, Path], prefix: str = "") -> Archive:
    """Write the archive under ``root``; ``prefix`` replaces ``str(root)`` in the returned URIs
    (e.g. ``s3://bucket/archive`` after the tree is uploaded)."""
    uri = prefix or str(root)
    status, faces = {}, {}
    (root / "images").mkdir(parents=True)
    for n in ("astronaut.png", "grace_hopper.jpg"):
        (root / "images" / n).write_bytes(photos[n].read_bytes())
        status[f"{uri}/images/{n}"] = "ok"
        faces[f"{uri}/images/{n}"] = EXPECTED_FACES[n]
    for n, s in corpus.write(photos["astronaut.png"], root / "images" / "odd").items():
        status[f"{uri}/images/odd/{n}"] = s
        if s == "ok":  # every decodable variant is the astronaut: one face
            faces[f"{uri}/images/odd/{n}"] = 1
    (root / "shards").mkdir()
    with tarfile.open(root / "shards" / "s-000000.tar", "w") as tf:
        for n in TAR_PHOTOS:
            data = photos[n].read_bytes()
            info = tarfile.TarInfo(n)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
            status[f"{uri}/shards/s-000000.tar#{n}"] = "ok"
            faces[f"{uri}/shards/s-000000.tar#{n}"] = EXPECTED_FACES[n]
    (root / "parquet").mkdir()
    pq.write_table(
        pa.table(
            {
                "key": [n.split(".")[0] for n in PARQUET_PHOTOS],
                "image": pa.array([photos[n].read_bytes() for n in PARQUET_PHOTOS], pa.binary()),
            }
        ),
        root / "parquet" / "part-0.parquet",
    )
    for n in PARQUET_PHOTOS:
        k = f"{uri}/parquet/part-0.parquet#{n.split('.')[0]}"
        status[k], faces[k] = "ok", EXPECTED_FACES[n]
    return Archive([f"{uri}/images", f"{uri}/shards", f"{uri}/parquet"], status, faces)


def upload(client, bucket: str, root: Path, prefix: str) -> None:
    """Copy every file under ``root`` to ``s3://bucket/prefix/...`` (boto3 ``client``)."""
    for p in sorted(root.rglob("*")):
        if p.is_file():
            client.put_object(Bucket=bucket, Key=f"{prefix}/{p.relative_to(root).as_posix()}", Body=p.read_bytes())
