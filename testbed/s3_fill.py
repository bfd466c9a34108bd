"""Filling an S3 bucket on the benches' SeaweedFS with N empty keys in minutes, not hours.

One PUT costs SeaweedFS ~2-3 ms of CPU on this 2-core box (~300-450 PUTs/s whatever the client),
so 10^6 keys by PUT take the best part of an hour. SeaweedFS keeps an S3 object as an entry in
its filer, and ``weed shell``'s ``fs.meta.load`` creates entries from a file of them (the format
``fs.meta.save`` writes: 4-byte big-endian length + one protobuf ``filer_pb.FullEntry``, i.e.
``{1: directory, 2: Entry{1: name, ...}}``). So: PUT one empty key through S3, save the bucket's
metadata, and write N copies of that key's entry under new names -- each exactly what a PUT of an
empty object would have made (same attributes, ETag, owner), which a listing then reads like any
other. Only the names are re-encoded; every other byte of the entry is the template's.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator
from pathlib import Path


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        low, n = n & 0x7F, n >> 7
        if not n:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def _read_varint(b: bytes, i: int) -> tuple[int, int]:
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def _field(b: bytes, i: int, tag: int) -> tuple[bytes, int]:
    """The length-delimited field ``tag`` at ``b[i]``; the bytes and where the next field starts."""
    if b[i] != (tag << 3) | 2:
        raise ValueError(f"expected length-delimited field {tag} at byte {i}, got tag byte {b[i]:#x}")
    n, i = _read_varint(b, i + 1)
    return b[i : i + n], i + n


def records(path: Path) -> Iterator[tuple[str, str, bytes]]:
    """(directory, name, the entry's bytes after its name) of each entry in an fs.meta.save file."""
    data = path.read_bytes()
    i = 0
    while i < len(data):
        (n,) = struct.unpack(">I", data[i : i + 4])
        rec = data[i + 4 : i + 4 + n]
        i += 4 + n
        directory, j = _field(rec, 0, 1)
        entry, _ = _field(rec, j, 2)
        name, k = _field(entry, 0, 1)
        yield directory.decode(), name.decode(), entry[k:]


def encode(directory: str, name: str, rest: bytes) -> bytes:
    """One fs.meta.load record: the entry ``rest`` (everything after the name) as ``directory/name``."""
    n = name.encode()
    entry = b"\x0a" + _varint(len(n)) + n + rest
    d = directory.encode()
    rec = b"\x0a" + _varint(len(d)) + d + b"\x12" + _varint(len(entry)) + entry
    return struct.pack(">I", len(rec)) + rec


def fill(client, shell: Callable[[str], str], bucket: str, keys: list[str], workdir: Path) -> float:
    """``keys`` (``a/b/c.jpg`` paths; folders listed before their files) as empty objects in
    ``bucket``, through ``shell`` (``SeaweedFS.shell``); returns seconds. One key is PUT through S3
    as the template; the others are made from its entry."""
    t0 = time.perf_counter()
    try:
        client.create_bucket(Bucket=bucket)
    except client.exceptions.BucketAlreadyOwnedByYou:  # an earlier fill stopped part-way: load over it
        pass
    client.put_object(Bucket=bucket, Key=keys[0], Body=b"")
    template = workdir / f"{bucket}.template.meta"
    shell(f"fs.meta.save -o {template} /buckets/{bucket}/")
    by_name = {name: rest for _, name, rest in records(template)}
    folder_rest = by_name[keys[0].split("/")[0]]  # a folder's entry, for every folder
    file_rest = by_name[keys[0].rsplit("/", 1)[-1]]
    made: set[str] = set()
    out = workdir / f"{bucket}.meta"
    with open(out, "wb") as f:
        for key in keys:
            *folders, name = key.split("/")
            for depth in range(1, len(folders) + 1):
                path = "/".join(folders[:depth])
                if path not in made:
                    made.add(path)
                    parent = "/".join([f"/buckets/{bucket}", *folders[: depth - 1]])
                    f.write(encode(parent, folders[depth - 1], folder_rest))
            f.write(encode("/".join([f"/buckets/{bucket}", *folders]), name, file_rest))
        # fs.meta.load (SeaweedFS 4.x) drops the file's last record: end with one that repeats a folder
        f.write(encode(f"/buckets/{bucket}", keys[0].split("/")[0], folder_rest))
    said = shell(f"fs.meta.load {out}")
    if "is loaded" not in said:
        raise RuntimeError(f"fs.meta.load did not load {out}: {said[-2000:]}")
    out.unlink()
    return time.perf_counter() - t0
