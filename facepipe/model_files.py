"""Model files on disk: their sha256 (the model id's suffix), a local copy of weights on S3, and
the cache of converted models -- all under one root, :func:`cache_dir`. The registry
(``facepipe.registry``) resolves which file a model loads; this module only handles the files."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

    from facepipe.registry import ModelSpec


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while b := f.read(chunk):
            h.update(b)
    return h.hexdigest()


def cache_dir(*parts: str) -> Path:
    """Where facepipe keeps what it may rebuild (weights fetched from S3, converted models, the demo's
    photos): ``$FACEPIPE_CACHE``, default ``~/.cache/facepipe``, and ``parts`` below it."""
    return Path(os.environ.get("FACEPIPE_CACHE", "~/.cache/facepipe")).expanduser().joinpath(*parts)


def fetch_weights(uri: str, cache: Path | None = None) -> Path:
    """A local copy of weights at ``uri`` (``s3://...``, read through facepipe's filesystem layer),
    cached under ``~/.cache/facepipe/weights`` and re-fetched when the object's size changes."""
    from facepipe.storage import fs as fsio

    fs, path = fsio.resolve(uri)
    info = fs.get_file_info(path)
    if info.type.name != "File":
        raise FileNotFoundError(f"weights {uri} not found")
    root = cache or cache_dir("weights")
    local = root / f"{hashlib.blake2b(uri.encode(), digest_size=8).hexdigest()}-{Path(path).name}"
    if not local.is_file() or local.stat().st_size != info.size:
        root.mkdir(parents=True, exist_ok=True)
        tmp = local.with_suffix(local.suffix + f".{os.getpid()}.part")
        tmp.write_bytes(fsio.read_bytes(fs, path))
        tmp.replace(local)
    return local


def build_cached(spec: ModelSpec, path: Path, digest: str) -> "nn.Module":
    """``spec.build(path)`` once per weights file: the converted state dict is kept under
    ``$FACEPIPE_CACHE/models/NAME-DIGEST.pt`` (``digest``: the weights' sha256 prefix, as in the
    model id; written atomically) and loaded strictly after that."""
    import torch

    root = cache_dir("models")
    cached = root / f"{spec.name}-{digest}.pt"
    if cached.is_file():
        model = spec.arch()
        try:
            model.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True), strict=True)
            return model
        except Exception:  # noqa: BLE001 -- a damaged or stale cache entry, whatever it raises: convert again
            pass
    model = spec.build(path)
    root.mkdir(parents=True, exist_ok=True)
    tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
    torch.save(model.state_dict(), tmp)
    tmp.replace(cached)
    return model
