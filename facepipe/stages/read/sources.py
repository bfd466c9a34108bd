"""Read stage: input URIs -> rows of (image_id, source_uri, data, read_error) through Ray Data.

Inputs are first *listed* on the driver into :class:`Unit` s (one image file, one tar shard, or
one Parquet file), then read by :class:`facepipe.stages.read.datasource.ImageArchiveDatasource`, whose read
tasks capture plain values only and stream blocks of at most ``rows_per_block`` rows. Units are spread over read tasks
by size (largest first onto the least-loaded task), so every core gets work.

Classification: files ending in ``.tar`` are WebDataset shards, files ending in ``.parquet`` are
Parquet; every other file is an image candidate, recognised by its content when decoded (a text
file named ``x.jpg`` becomes a ``not_image`` row). Names starting with ``.`` or ``_`` (``.DS_Store``,
``_SUCCESS``) are skipped.
"""

from __future__ import annotations

import hashlib
import tarfile
from dataclasses import dataclass
from typing import Iterator

import pyarrow as pa
import pyarrow.fs as pafs

from facepipe.errors import StorageError, UserError, is_transient
from facepipe.flags import flag
from facepipe.stages.read.tar import iter_image_members, tail_is_clean
from facepipe.storage import fs as fsio

READ_SCHEMA = pa.schema(
    [
        pa.field("image_id", pa.string()),
        pa.field("source_uri", pa.string()),
        pa.field("data", pa.binary()),
        pa.field("read_error", pa.string()),
        # the images-table status of a failed read: read_error (storage: retried next run) or
        # corrupt (the unit's content is damaged or not what was asked for: no use retrying)
        pa.field("read_status", pa.string()),
    ]
)


@dataclass(frozen=True)
class ReadConfig:
    """image_column / id_column: for Parquet inputs, the binary image column (or a struct with a
    ``bytes`` field, as Hugging Face datasets store images) and the column naming each row; without
    an id column the row number within its file is used.
    rows_per_block: rows in each block the read tasks emit (bounds memory per block), and so the
    images of one decode call.
    manifest: a file listing the input units (``facepipe.stages.read.inventory``), so the driver does not
    list millions of keys before reading starts."""

    image_column: str = flag("image", "--image-column", "Parquet column holding image bytes")
    id_column: str | None = flag(None, "--id-column", "Parquet column naming each row (default: row number)")
    rows_per_block: int = 16
    #: an inventory of the input units (facepipe.stages.read.inventory) read instead of, or besides, listing INPUTs
    manifest: str | None = flag(
        None,
        "--input-manifest",
        "a Parquet or CSV file (or folder; local or s3://) listing the input files -- a 'uri' column, or S3 "
        "Inventory's bucket/key, with size and last_modified_date -- instead of listing INPUT prefixes",
    )


@dataclass(frozen=True, slots=True)  # slots: a run holds one per input file (~0.1 KB less each)
class Unit:
    kind: str  # "image" | "tar" | "parquet"
    uri: str
    size: int
    mtime_ns: int | None = None  # last modified (S3: LastModified), with size the unit's version


def image_id_for(source_uri: str) -> str:
    """Deterministic id of an image: 32 hex chars of BLAKE2b over its ``source_uri``."""
    return hashlib.blake2b(source_uri.encode(), digest_size=16).hexdigest()


def unit_kind(path: str) -> str:
    """ "tar", "parquet" or "image", by the file name."""
    low = path.lower()
    if low.endswith(".tar"):
        return "tar"
    if low.endswith(".parquet"):
        return "parquet"
    return "image"


def unit_of(source_uri: str) -> Unit:
    """The input unit an image's ``source_uri`` came from (``UNIT#MEMBER`` for a tar or Parquet
    member; '#' may also appear inside either part). Size and version are not known here."""
    parts = source_uri.split("#")
    for i in range(1, len(parts)):
        head = "#".join(parts[:i])
        if unit_kind(head) != "image":
            return Unit(unit_kind(head), head, 0)
    return Unit("image", source_uri, 0)


def _hidden(path: str, root: str) -> bool:
    rel = path[len(root) :].strip("/")
    return any(part.startswith((".", "_")) for part in rel.split("/"))


class InputError(UserError):
    """An input URI that cannot be read at all (missing, unreadable): a one-line user error."""


def list_units(uris: list[str]) -> list[Unit]:
    """List every readable unit under ``uris``, sorted by URI (deterministic)."""
    units: list[Unit] = []
    for uri in uris:
        try:
            fs, path = fsio.resolve(uri)
            info = fs.get_file_info(path)
        except (OSError, ValueError) as e:
            if is_transient(e):
                raise StorageError(f"cannot access input {uri}: {e}") from None
            raise InputError(f"cannot access input {uri}: {e}") from None
        if info.type == pafs.FileType.File:
            units.append(Unit(unit_kind(path), fsio.to_uri(fs, path), info.size or 0, info.mtime_ns))
        elif info.type == pafs.FileType.Directory or (fsio.is_s3(uri) and info.type == pafs.FileType.NotFound):
            try:
                infos = fs.get_file_info(pafs.FileSelector(path, recursive=True, allow_not_found=True))
            except OSError as e:
                if is_transient(e):
                    raise StorageError(f"cannot list input {uri}: {e}") from None
                raise InputError(f"cannot list input {uri}: {e}") from None
            found = [i for i in infos if i.type == pafs.FileType.File and not _hidden(i.path, path)]
            if not found:
                raise InputError(f"input {uri} contains no files")
            units += [Unit(unit_kind(i.path), fsio.to_uri(fs, i.path), i.size or 0, i.mtime_ns) for i in found]
        else:
            raise InputError(f"input {uri} does not exist")
    return sorted(set(units), key=lambda u: u.uri)


def _row(source_uri: str, data: bytes | None, error: str | None, status: str | None = None) -> dict:
    status = None if error is None else (status or "read_error")
    return {
        "image_id": image_id_for(source_uri),
        "source_uri": source_uri,
        "data": data,
        "read_error": error,
        "read_status": status,
    }


def _read_parquet(fs: pafs.FileSystem, path: str, uri: str, cfg: ReadConfig) -> Iterator[dict]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(fs.open_input_file(path))
        names = pf.schema_arrow.names
        if cfg.image_column not in names:
            raise ValueError(f"no image column {cfg.image_column!r} (columns: {', '.join(names)})")
        if cfg.id_column and cfg.id_column not in names:
            raise ValueError(f"no id column {cfg.id_column!r} (columns: {', '.join(names)})")
    except Exception as e:  # the whole file is unusable: one failure row names it
        yield _row(uri, None, f"cannot read Parquet file: {e}")
        return
    img_type = pf.schema_arrow.field(cfg.image_column).type
    struct_bytes = pa.types.is_struct(img_type) and img_type.get_field_index("bytes") >= 0
    if not (pa.types.is_binary(img_type) or pa.types.is_large_binary(img_type) or struct_bytes):
        yield _row(
            uri,
            None,
            f"cannot read Parquet file: image column {cfg.image_column!r} has type {img_type}, expected binary",
            "corrupt",
        )
        return
    cols = [cfg.image_column] + ([cfg.id_column] if cfg.id_column else [])
    row_number = 0
    try:
        for batch in pf.iter_batches(batch_size=cfg.rows_per_block, columns=cols):
            images = batch.column(0)
            if struct_bytes:
                images = images.field("bytes")
            ids = batch.column(1).to_pylist() if cfg.id_column else range(row_number, row_number + batch.num_rows)
            for rid, data in zip(ids, images.to_pylist()):
                yield _row(f"{uri}#{rid}", data, None if data is not None else "image column is null")
            row_number += batch.num_rows
    except Exception as e:  # storage that failed mid-file: retried next run; a damaged file: recorded as such
        what, status = ("unreadable", "read_error") if is_transient(e) else ("damaged", "corrupt")
        yield _row(f"{uri}#row{row_number}+", None, f"Parquet file {what} after row {row_number}: {e}", status)


#: bytes each read of a tar shard fetches (one S3 GET per this much of the shard)
TAR_READ_BUFFER = 8 << 20


def _read_tar(fs: pafs.FileSystem, path: str, uri: str) -> Iterator[dict]:
    """Members of a shard; damage yields one extra row for the shard itself, after the members
    read before it."""
    try:
        # buffered: tarfile reads 10 KiB at a time, and an unbuffered S3 stream turns every read
        # into a ranged GET (~2 requests per member: 2,000 for a shard of 1,000 small images)
        with fs.open_input_stream(path, buffer_size=TAR_READ_BUFFER) as stream:
            members = iter_image_members(stream)
            while True:
                try:
                    name, data = next(members)
                except StopIteration as stop:
                    end = stop.value
                    break
                yield _row(f"{uri}#{name}", data, None)
        with fs.open_input_file(path) as f:
            if not tail_is_clean(f, end):
                yield _row(
                    uri, None, f"tar shard damaged: unreadable header at byte {end}, later members lost", "corrupt"
                )
    except Exception as e:  # a tar format error is damage; any other (storage) is retried next run
        if isinstance(e, (tarfile.TarError, EOFError)):
            yield _row(uri, None, f"tar shard damaged: {type(e).__name__}: {e}", "corrupt")
        else:
            yield _row(uri, None, f"tar shard unreadable: {type(e).__name__}: {e}")


def read_unit(unit: Unit, cfg: ReadConfig) -> Iterator[dict]:
    """Rows of one unit; read failures become rows with ``read_error`` set, never exceptions."""
    fs, path = fsio.resolve(unit.uri)
    if unit.kind == "tar":
        yield from _read_tar(fs, path, unit.uri)
    elif unit.kind == "parquet":
        yield from _read_parquet(fs, path, unit.uri, cfg)
    else:
        try:
            yield _row(unit.uri, fsio.read_bytes(fs, path), None)
        except Exception as e:
            yield _row(unit.uri, None, f"cannot read file: {type(e).__name__}: {e}")


def read_units(units: list[Unit], cfg: ReadConfig) -> Iterator[pa.Table]:
    """Blocks of at most ``cfg.rows_per_block`` rows (READ_SCHEMA) from ``units`` in order."""
    rows: list[dict] = []
    for unit in units:
        for row in read_unit(unit, cfg):
            rows.append(row)
            if len(rows) >= cfg.rows_per_block:
                yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)
                rows = []
    if rows:
        yield pa.Table.from_pylist(rows, schema=READ_SCHEMA)


def split_units(units: list[Unit], n: int) -> list[list[Unit]]:
    """Partition units into at most ``n`` non-empty groups of similar total size (greedy LPT)."""
    n = max(1, min(n, len(units)))
    groups: list[list[Unit]] = [[] for _ in range(n)]
    loads = [0] * n
    for u in sorted(units, key=lambda u: (-u.size, u.uri)):
        i = loads.index(min(loads))
        groups[i].append(u)
        loads[i] += max(u.size, 1)
    return [sorted(g, key=lambda u: u.uri) for g in groups if g]
