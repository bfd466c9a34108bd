"""WebDataset tar shards as plain generators.

A shard is a tar whose members are named ``KEY.EXT`` (the key is the member path up to the first
dot of its base name). facepipe reads the members whose extension is an image type; the other
members of a sample (``.json``, ``.cls``, ``.txt``) are metadata and are skipped.
"""

from __future__ import annotations

import tarfile
from typing import BinaryIO, Generator

IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp", "bmp", "tif", "tiff", "gif"})


def split_key(name: str) -> tuple[str, str]:
    """``dir/abc.seg.jpg`` -> (``dir/abc``, ``seg.jpg``), WebDataset's key/extension split."""
    head, _, base = name.rpartition("/")
    stem, dot, ext = base.partition(".")
    key = f"{head}/{stem}" if head else stem
    return key, ext if dot else ""


def iter_image_members(stream: BinaryIO) -> Generator[tuple[str, bytes], None, int]:
    """Yield (member name, bytes) of the image members of a tar read as a stream; return the
    archive offset just past the last member.

    A tar cut inside a member's data raises ``tarfile.TarError`` (or ``OSError``/``EOFError``)
    after every member before the damage has been yielded. A tar cut or corrupted inside a
    *header* ends the iteration silently (that is how ``tarfile`` reads streams): check the
    returned offset with :func:`tail_is_clean`.
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
        return tf.offset


def tail_is_clean(f: BinaryIO, offset: int, chunk: int = 1 << 16) -> bool:
    """True when every byte of seekable ``f`` from ``offset`` on is zero, as in a sound tar
    (two zero end-of-archive blocks, then zero record padding); False means members were lost."""
    f.seek(offset)
    while b := f.read(chunk):
        if b.count(0) != len(b):
            return False
    return True
