"""Evidence sets built once per content: a builder's output is kept under
``$FACEPIPE_CACHE/evidence/NAME-KEY`` where KEY hashes everything the output depends on -- the
builder's source files, the parts of facepipe it runs (the models that find and embed the faces), the
input files (names, sizes, bytes' hash for small ones) and the parameters. A change to any of them
is a new key, so a stale set is never used; an unchanged set is not rebuilt each session.
Built into a temp folder beside it and renamed into place (a crash leaves no half set)."""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path
from typing import Callable, Iterable

from facepipe.model_files import cache_dir

REPO = Path(__file__).resolve().parents[1]


def content_key(sources: Iterable[Path], inputs: Iterable[Path] = (), **params: object) -> str:
    """16 hex chars over the sources' bytes, the inputs' names and sizes and the parameters."""
    h = hashlib.sha256()
    for p in sorted({Path(p) for p in sources}):
        files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts) if p.is_dir() else [p]
        for f in files:
            h.update(str(f.relative_to(REPO) if f.is_relative_to(REPO) else f.name).encode())
            h.update(f.read_bytes())
    for p in sorted(Path(p) for p in inputs):
        h.update(f"{p.name}:{p.stat().st_size}".encode())
    h.update(repr(sorted(params.items())).encode())
    return h.hexdigest()[:16]


def built(name: str, key: str, build: Callable[[Path], None]) -> Path:
    """The folder ``build(folder)`` makes for ``key``: built now if the cache does not hold it."""
    final = cache_dir("evidence", f"{name}-{key}")
    if final.is_dir():
        return final
    tmp = final.with_name(f".{final.name}.{os.getpid()}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        build(tmp)
        tmp.rename(final)
    except FileExistsError:  # built meanwhile by another session: keep that one
        shutil.rmtree(tmp, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final
