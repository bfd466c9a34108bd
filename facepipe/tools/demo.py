"""Real photos for the demo and the tests, and the demo archive built from them.

Sources (all redistributable): scikit-image's astronaut (1 face), matplotlib's grace_hopper.jpg (1),
the ``face_recognition`` sdist's test images (obama x5 incl. two partial faces, biden), and the
``insightface`` sdist's t1.jpg (6 faces) and Tom Hanks. The sdists are fetched with ``pip download``
from the package index once and cached under ``$FACEPIPE_CACHE`` (default ``~/.cache/facepipe``).
The job itself never downloads anything.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

SDISTS: dict[str, tuple[str, dict[str, str]]] = {
    "face_recognition": (
        "face_recognition==1.3.0",
        {
            f"{n}.jpg": f"face_recognition-1.3.0/tests/test_images/{n}.jpg"
            for n in ("obama", "obama2", "obama3", "obama_partial_face", "obama_partial_face2", "biden")
        },
    ),
    "insightface": (
        "insightface==2.1",
        {
            "t1.jpg": "insightface-2.1/insightface/data/images/t1.jpg",
            "Tom_Hanks_54745.png": "insightface-2.1/insightface/data/images/Tom_Hanks_54745.png",
        },
    ),
}

#: Faces a careful person counts in each photo (partial faces included).
EXPECTED_FACES = {
    "astronaut.png": 1,
    "grace_hopper.jpg": 1,
    "obama.jpg": 1,
    "obama2.jpg": 1,
    "obama3.jpg": 1,
    "obama_partial_face.jpg": 1,
    "obama_partial_face2.jpg": 1,
    "biden.jpg": 1,
    "t1.jpg": 6,
    "Tom_Hanks_54745.png": 1,
}


def cache_dir() -> Path:
    from facepipe.model_files import cache_dir as root

    return root()


def _write_atomic(path: Path, data: bytes) -> None:
    """Write a cache file whole or not at all: two processes filling the cache at once (two
    test sessions) never read a half-written photo."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _fetch_sdist(requirement: str, members: dict[str, str], dest: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--no-deps",
            "--no-binary",
            ":all:",
            requirement,
            "-d",
            tmp,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        archives = list(Path(tmp).glob("*.tar.gz"))
        if not archives:
            raise RuntimeError(f"pip download {requirement} failed: {proc.stderr.strip()[-500:]}")
        with tarfile.open(archives[0]) as tf:
            for name, member in members.items():
                f = tf.extractfile(member)
                if f is None:
                    raise RuntimeError(f"{archives[0].name} has no {member}")
                _write_atomic(dest / name, f.read())


def photos(cache: Path | None = None) -> dict[str, Path]:
    """Name -> path of every demo/test photo, fetching and caching them on first use."""
    dest = (cache or cache_dir()) / "photos"
    dest.mkdir(parents=True, exist_ok=True)
    astro = dest / "astronaut.png"
    if not astro.exists():
        from PIL import Image
        from skimage import data

        buf = io.BytesIO()
        Image.fromarray(data.astronaut()).save(buf, format="PNG")
        _write_atomic(astro, buf.getvalue())
    hopper = dest / "grace_hopper.jpg"
    if not hopper.exists():
        import matplotlib

        _write_atomic(hopper, (Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg").read_bytes())
    for requirement, members in SDISTS.values():
        if not all((dest / n).exists() for n in members):
            _fetch_sdist(requirement, members, dest)
    return {n: dest / n for n in EXPECTED_FACES}


@dataclass(frozen=True)
class DemoArchive:
    root: Path
    inputs: tuple[str, ...]
    n_files: int


def build_demo_archive(workdir: str | Path) -> DemoArchive:
    """A small archive in all three input layouts, plus two broken files.

    ``images/``: astronaut, grace hopper, a text file named .jpg, a truncated JPEG.
    ``shards/faces-000000.tar``: the obama and biden photos, WebDataset-style (``key.jpg`` + ``key.json``).
    ``parquet/faces.parquet``: t1.jpg and Tom Hanks as rows ``(key, image)``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    p = photos()
    root = Path(workdir) / "archive"
    if root.exists():
        shutil.rmtree(root)
    (root / "images").mkdir(parents=True)
    (root / "shards").mkdir()
    (root / "parquet").mkdir()
    for n in ("astronaut.png", "grace_hopper.jpg"):
        shutil.copy(p[n], root / "images" / n)
    (root / "images" / "not_a_photo.jpg").write_text("this is a text file with a .jpg name\n")
    jpg = p["grace_hopper.jpg"].read_bytes()
    (root / "images" / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    with tarfile.open(root / "shards" / "faces-000000.tar", "w") as tf:
        for n in (
            "obama.jpg",
            "obama2.jpg",
            "obama3.jpg",
            "obama_partial_face.jpg",
            "obama_partial_face2.jpg",
            "biden.jpg",
        ):
            key = n.rsplit(".", 1)[0]
            for member, data in (
                (f"{key}.jpg", p[n].read_bytes()),
                (f"{key}.json", json.dumps({"source": n}).encode()),
            ):
                info = tarfile.TarInfo(member)
                info.size = len(data)
                tf.addfile(info, io.BytesIO(data))
    rows = [("t1", p["t1.jpg"].read_bytes()), ("tom_hanks", p["Tom_Hanks_54745.png"].read_bytes())]
    pq.write_table(
        pa.table({"key": [k for k, _ in rows], "image": pa.array([d for _, d in rows], pa.binary())}),
        root / "parquet" / "faces.parquet",
    )
    inputs = (str(root / "images"), str(root / "shards"), str(root / "parquet"))
    return DemoArchive(root, inputs, n_files=4 + 1 + 1)
