"""WebDataset tar shards as plain generators.

A shard is a tar whose members are named ``KEY.EXT`` (the key is the member path up to the first
dot of its base name). facepipe reads the members whose extension is an image type; the other
members of a sample (``.json``, ``.cls``, ``.txt``) are metadata and are skipped.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO, Iterator

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"})


def split_key(name: str) -> tuple[str, str]:
    """``dir/abc.seg.jpg`` -> (``dir/abc``, ``seg.jpg``), WebDataset's key/extension split."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{head}/{stem}" if head else stem
    return key, ext if dot else ""


def iter_image_members(stream: BinaryIO) -> Iterator[tuple[str, bytes]]:
    """Yield (member name, bytes) of the image members of a tar read as a stream.

    A damaged tar raises ``tarfile.TarError`` (or ``OSError``/``EOFError``) *after* every member
    before the damage has been yielded, so callers can record the failure and keep those members.
    """
    with tarfile.open(fileobj=stream, mode="r|*") as tf:
        for member in tf:
            if not member.isfile():
                continue
            _, ext = split_key(member.name)
            if ext.rsplit(".", 1)[-1].lower() not in IMAGE_EXTENSIONS:
                continue
            f = tf.extractfile(member)
            yield member.name, (f.read() if f is not None else b"")
