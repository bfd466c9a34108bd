"""Two nights of a real output, run as real processes: the fault tests' common ground.

The first night processes three photos, the second adds three more (a group photo among them),
both with the local executor and DROCC allowed to train on as few as 5 confident faces (a config
file: the photos that ship hold ~15), so every post-extract step -- outlier scores, identity
snapshot, events -- writes something. A test copies the output as the first night left it
(:func:`build`), places its fault in the second night, runs it again and compares
:func:`tables` with those of the nights run without a fault.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import duckdb

from testbed.procs import REPO

NIGHT1 = ("obama.jpg", "obama2.jpg", "biden.jpg")
NIGHT2 = ("obama3.jpg", "t1.jpg", "Tom_Hanks_54745.png")
#: what is compared: every row of each table (ids included)
QUERIES = {
    "images": "select image_id, source_uri, status, n_faces from T order by all",
    "faces": "select face_id, image_id from T order by all",
    "face_outliers": "select face_id, drocc_score, is_outlier from T order by all",
    "identities": "select identity_id, n_faces, representative_face_id from T order by all",
    "face_identity": "select face_id, identity_id, status from T order by all",
    "identity_events": "select event, identity_id, face_ids from T order by all",
}
SECOND = "2026-11-02"


@dataclass(frozen=True)
class Nights:
    after_one: Path  # the output as the first night left it (copy it before changing it)
    two: Path  # the second night's input folder (the first night's photos and three more)
    clean: dict  # :func:`tables` after both nights without a fault


def night(
    out: Path, inputs: Path, dt: str, *fault: str, extra: tuple[str, ...] = (), timeout: float = 280
) -> subprocess.CompletedProcess:
    """``facepipe run`` over ``inputs`` into ``out`` for the night ``dt`` (run id ``night-DT``),
    through ``tests/faulty_cli.py`` with ``fault`` (its options) when given; ``extra``: more flags."""
    config = inputs.parent / "few-faces.toml"
    config.write_text("[score]\nmin_faces = 5\n")
    args = ["run", str(inputs), "-o", str(out), "--executor", "local", "--dt", dt, "--run-id", f"night-{dt}",
            "--config", str(config), *extra]  # fmt: skip
    cmd = [sys.executable, str(REPO / "tests" / "faulty_cli.py"), *fault, "--", *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def second(out: Path, n: Nights, *fault: str, extra: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """The second night into ``out``."""
    return night(out, n.two, SECOND, *fault, extra=extra)


def tables(out: Path) -> dict:
    """Each table's rows (none when the run wrote no file of it, as a night without events)."""
    return {
        t: duckdb.sql(q.replace("T", f"read_parquet('{out}/{t}/*/*.parquet')")).fetchall()
        if list(out.glob(f"{t}/*/*.parquet"))
        else []
        for t, q in QUERIES.items()
    }


def build(photos: dict[str, Path], root: Path) -> Nights:
    """The inputs of both nights under ``root``, the output after the first, and the tables after both."""
    one, two = root / "one", root / "two"
    for d, names in ((one, NIGHT1), (two, NIGHT1 + NIGHT2)):
        d.mkdir()
        for name in names:
            shutil.copy(photos[name], d / name)
    clean = root / "clean"
    r = night(clean, one, "2026-11-01")
    assert r.returncode == 0, r.stderr[-3000:]
    after_one = root / "after-one"
    shutil.copytree(clean, after_one)
    r = night(clean, two, SECOND)
    assert r.returncode == 0, r.stderr[-3000:]
    found = tables(clean)
    assert all(found[t] for t in ("faces", "face_outliers", "identities", "face_identity")), found
    return Nights(after_one, two, found)
