"""Input units from an inventory file instead of a listing.

Listing a prefix of 10^6 objects costs the driver 1,000 LIST requests made one after the other
(S3 returns 1,000 keys a page) before any image is read; 10^8 objects take hours (ray #40686;
our figures: bench/RESULTS.md, "Listing"). Archives that size already have an inventory:
S3 Inventory writes one every day, and pipelines that fill an archive usually keep a table of
what they wrote. ``--input-manifest URI`` reads the units from such a file:

- Parquet (a file, or a folder of them such as S3 Inventory's ``data/``) or CSV with a header row;
- a ``uri`` column (``s3://bucket/key`` or a local path), or S3 Inventory's ``bucket`` and ``key``;
- optionally ``size`` (bytes) and ``last_modified_date`` (a timestamp; S3 Inventory's name) or
  ``mtime_ns``: a unit's version, which is how a later run tells a changed unit from a done one.
  Without them a listed unit is processed once and never counted as changed.

The units are what a listing would give for the same objects (kind by name, files named ``_*``
or ``.*`` left out, sorted, duplicates once), so the run's output does not depend on which of
the two named them (tests/stages/read/test_inventory.py).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as pads

from facepipe.errors import StorageError, UserError, is_transient
from facepipe.stages.read.sources import Unit, unit_kind
from facepipe.storage import fs as fsio


def _read(uri: str) -> pa.Table:
    fs, path = fsio.resolve(uri)
    fmt = "csv" if path.lower().endswith((".csv", ".csv.gz")) else "parquet"
    try:
        return pads.dataset(path, filesystem=fs, format=fmt).to_table()
    except (OSError, pa.ArrowInvalid) as e:
        if is_transient(e):
            raise StorageError(f"cannot read input manifest {uri}: {e}") from None
        raise UserError(f"cannot read input manifest {uri}: {' '.join(str(e).split())[:300]}") from None


def _uris(table: pa.Table, uri: str) -> list[str]:
    if "uri" in table.column_names:
        return [str(u) for u in table.column("uri").to_pylist()]
    if {"bucket", "key"} <= set(table.column_names):
        return [f"s3://{b}/{k}" for b, k in zip(table.column("bucket").to_pylist(), table.column("key").to_pylist())]
    raise UserError(
        f"input manifest {uri} has columns {table.column_names}: it needs 'uri', or S3 Inventory's 'bucket' and 'key'"
    )


def _mtimes_ns(table: pa.Table) -> list[int | None]:
    if "mtime_ns" in table.column_names:
        return table.column("mtime_ns").cast(pa.int64()).to_pylist()
    if "last_modified_date" in table.column_names:
        col = table.column("last_modified_date")
        if not pa.types.is_timestamp(col.type):  # CSV: ISO 8601 text
            col = pc.cast(col, pa.timestamp("ns", tz="UTC"))
        return pc.cast(col, pa.timestamp("ns", tz=col.type.tz)).cast(pa.int64()).to_pylist()
    return [None] * table.num_rows


def _hidden(uri: str) -> bool:
    return uri.rstrip("/").rsplit("/", 1)[-1].startswith((".", "_"))


def manifest_units(uri: str) -> list[Unit]:
    """The units an inventory file lists (see the module's doc), sorted by URI."""
    table = _read(uri)
    uris = _uris(table, uri)
    sizes = table.column("size").cast(pa.int64()).to_pylist() if "size" in table.column_names else [0] * len(uris)
    units = {
        Unit(unit_kind(u), u, size or 0, mtime)
        for u, size, mtime in zip(uris, sizes, _mtimes_ns(table))
        if u and not u.endswith("/") and not _hidden(u)
    }
    if not units:
        raise UserError(f"input manifest {uri} lists no input files")
    return sorted(units, key=lambda u: u.uri)
