"""The output root: its layout and every operation on it, in one picklable object.

Layout (``docs/operations.md`` has the protocol)::

    OUT/TABLE/dt=D/part-RUN-UUID.parquet   the tables (``schema.TABLES``), Hive-partitioned
    OUT/_runs/RUN.json, RUN.html           manifests (written last) and run reports
    OUT/_staging/RUN/TABLE/dt=D/...        a run's files before they are published
    OUT/_state/shards/part-RUN.parquet     the input units each run processed
    OUT/_tombstones/part-REQUEST.parquet   what erasure requests removed
    OUT/_audit/REQUEST.json                one record per erasure request
    OUT/_models/drocc/drocc-HASH.pt|.json  DROCC artifacts
    OUT/_index/{quantizer,cells}/part-...  the cluster stage's kept IVF cells (``storage.ivf_store``)
    OUT/_journal/RUN-ID.json               a publish in progress (``Output.publish``, ``recover``)
    OUT/_lease/GEN.json                    the writer holding the output (``storage.lease``)
    OUT/_encryption.json                   the output's encryption setting (``storage.crypto``)

Readers (DuckDB, Athena, pyarrow datasets) ignore paths starting with ``_`` or ``.``. An
:class:`Output` is built once on the driver (:meth:`Output.open` reads the encryption setting)
and travels to Ray tasks as two plain values; its filesystem is resolved where it is used.
"""

from __future__ import annotations

import contextlib
import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs

from facepipe import schema
from facepipe.errors import UserError
from facepipe.storage import crypto
from facepipe.storage import fs as fsio

RUNS = "_runs"
STAGING = "_staging"
STATE = "_state/shards"
TOMBSTONES = "_tombstones"
AUDIT = "_audit"
MODELS = "_models"
JOURNAL = "_journal"


def without_rows(table: pa.Table, keep: pa.Array | pa.ChunkedArray) -> tuple[pa.Table | None, int]:
    """``table`` without the rows where ``keep`` is false (null keeps): (the rows kept, None when
    none are; rows removed) -- the one row deletion of the output, for purge and for forget."""
    import pyarrow.compute as pc

    mask = pc.fill_null(keep, True)
    removed = table.num_rows - int(pc.sum(mask).as_py() or 0)
    kept = table.filter(mask) if removed else table
    return (kept if kept.num_rows else None), removed


def part_name(run_id: str) -> str:
    """A new table file's name: ``part-RUN_ID-UUID.parquet`` (the run id names its owner)."""
    return f"part-{run_id}-{uuid.uuid4().hex[:16]}.parquet"


@dataclass(frozen=True)
class Output:
    """An output root (local path or ``s3://bucket/prefix``) and its encryption setting."""

    uri: str
    encryption: crypto.EncryptionConfig | None = None

    @classmethod
    def open(cls, uri: str) -> Output:
        """The output at ``uri`` with the encryption setting it records (None: plain)."""
        return cls(uri, crypto.for_output(uri))

    # ------------------------------------------------------------ where things are
    @property
    def fs(self) -> pafs.FileSystem:
        return fsio.resolve(self.uri)[0]

    def path(self, *parts: str) -> str:
        """The path inside :attr:`fs` of ``OUT/parts...``."""
        return "/".join([fsio.resolve(self.uri)[1], *(p.strip("/") for p in parts)])

    def uri_of(self, *parts: str) -> str:
        """What users see: ``OUT/parts...`` as a local path or an ``s3://`` URI."""
        return fsio.join(self.uri, *parts)

    def relative(self, path: str) -> str:
        """``path`` (inside :attr:`fs`) relative to the root."""
        return path[len(self.path()) + 1 :]

    def exists(self, *parts: str) -> bool:
        return self.fs.get_file_info(self.path(*parts)).type != pafs.FileType.NotFound

    def files(self, *parts: str, recursive: bool = False, prefix: str = "", suffix: str = "") -> list[str]:
        """Sorted paths of the files below ``OUT/parts...`` whose names start with ``prefix`` and
        end with ``suffix``; none when the folder is missing."""
        sel = pafs.FileSelector(self.path(*parts), recursive=recursive, allow_not_found=True)
        return sorted(
            i.path
            for i in self.fs.get_file_info(sel)
            if i.type == pafs.FileType.File and i.base_name.startswith(prefix) and i.base_name.endswith(suffix)
        )

    def part_files(self, table: str, run_id: str | None = None, exclude_run: str | None = None) -> list[str]:
        """A table's data files: all, those of ``run_id``, or all but those of ``exclude_run``."""
        files = self.files(table, recursive=True, prefix=f"part-{run_id}-" if run_id is not None else "part-")
        if exclude_run is not None:
            own = f"part-{exclude_run}-"
            files = [f for f in files if not f.rsplit("/", 1)[-1].startswith(own)]
        return files

    # ------------------------------------------------------------ reading and writing
    def read_table(self, path: str, **kw) -> pa.Table:
        """A table file, decrypted with the output's setting."""
        return crypto.read_table(path, self.fs, self.encryption, **kw)

    def parquet_file(self, path: str):
        """A table file opened (``pyarrow.parquet.ParquetFile``), decrypted likewise."""
        return crypto.parquet_file(path, self.fs, self.encryption)

    def iter_batches(self, path: str, **kw):
        """A table file a batch at a time (``ParquetFile.iter_batches``), decrypted likewise."""
        return crypto.iter_batches(path, self.fs, self.encryption, **kw)

    def write_table(self, table: pa.Table, path: str) -> None:
        """A table file (zstd), its biometric columns encrypted with the output's setting."""
        self.fs.create_dir(path.rsplit("/", 1)[0], recursive=True)
        crypto.write_table(table, path, self.fs, self.encryption, compression="zstd")

    def dataset(self, table: str):
        """A published table as a ``pyarrow.dataset`` (``dt`` from the Hive path, as a string),
        or None when the table has no files."""
        import pyarrow.dataset as pads

        if not self.exists(table):
            return None
        part = pads.partitioning(pa.schema([("dt", pa.string())]), flavor="hive")
        fmt = crypto.dataset_format(self.encryption)
        ds = pads.dataset(
            self.path(table), filesystem=self.fs, format=fmt, partitioning=part, exclude_invalid_files=True
        )
        if not ds.files:
            return None  # only empty partition folders left (e.g. all rows purged)
        # the schema is inferred from one file; an output written before a column was added may
        # offer an older one: the columns the table declares now are read too (null in old files)
        declared = schema.TABLES.get(table)
        missing = [f.with_nullable(True) for f in declared or () if f.name not in ds.schema.names]
        if missing:
            full = pa.schema([*ds.schema, *missing], metadata=ds.schema.metadata)
            ds = pads.dataset(
                ds.files, schema=full, filesystem=self.fs, format=fmt, partitioning=part,
                partition_base_dir=self.path(table),
            )  # fmt: skip
        return ds

    def atomic_write(self, path: str, data: bytes | pa.Table) -> None:
        """Write a file whole or not at all: to a hidden temp file beside it, then moved over it
        (a rename on a local disk; on S3 an object appears only when complete anyway). A table
        is written as plain Parquet (state and tombstones hold no biometric column)."""
        import pyarrow.parquet as pq

        folder, name = path.rsplit("/", 1)
        self.fs.create_dir(folder, recursive=True)
        if isinstance(data, pa.Table):
            write = lambda tmp: pq.write_table(data, tmp, filesystem=self.fs)  # noqa: E731
        else:
            write = lambda tmp: fsio.write_bytes(self.fs, tmp, data)  # noqa: E731
        self._via_temp(f"{folder}/.{name}.{uuid.uuid4().hex[:8]}.tmp", path, write)

    def _via_temp(self, tmp: str, path: str, write: Callable[[str], object]) -> None:
        """``write(tmp)``, then move ``tmp`` over ``path``. A write that fails (a full disk) leaves
        no temp file behind to fill the disk further."""
        try:
            write(tmp)
        except BaseException:
            with contextlib.suppress(OSError):
                self.fs.delete_file(tmp)
            raise
        self.fs.move(tmp, path)

    def delete_rows(self, path: str, keep: pa.Array | pa.ChunkedArray) -> int:
        """Remove from one table file the rows where ``keep`` is false, in place (the file is
        rewritten beside and moved over, or deleted when nothing is left); returns rows removed.
        ``facepipe forget`` stages the same :func:`without_rows` result instead of replacing."""
        kept, removed = without_rows(self.read_table(path), keep)
        if removed:
            self.replace_file(path, kept)
        return removed

    def replace_file(self, path: str, table: pa.Table | None) -> None:
        """Put a rewritten table file in place (written beside, moved over), or delete it (None)."""
        if table is None:
            self.fs.delete_file(path)
            return
        tmp = path.rsplit("/", 1)[0] + f"/.rewrite-{uuid.uuid4().hex[:8]}.tmp"
        self._via_temp(tmp, path, lambda t: crypto.write_table(table, t, self.fs, self.encryption, compression="zstd"))

    # ------------------------------------------------------------ a run's staging prefix
    def staging_path(self, run_id: str, *parts: str) -> str:
        return self.path(STAGING, run_id, *parts)

    def clear_staging(self, run_id: str, tables: tuple[str, ...] | None = None) -> None:
        """Delete the run's staging prefix (``tables``: only those tables'). The shared
        ``_staging`` root stays: another run may be writing under it."""
        fs, root = self.fs, self.staging_path(run_id)
        for d in [root] if tables is None else [f"{root}/{t}" for t in tables]:
            if fs.get_file_info(d).type != pafs.FileType.NotFound:
                fs.delete_dir(d)
        if tables is not None and fs.get_file_info(root).type != pafs.FileType.NotFound:
            if not self.files(STAGING, run_id, recursive=True):
                fs.delete_dir(root)

    def publish(
        self,
        run_id: str,
        staged: list[str],
        tables: tuple[str, ...] = ("images", "faces"),
        snapshot: bool = False,
        replace: bool = True,
    ) -> dict[str, int]:
        """Move a run's staged files (paths relative to its staging prefix) into ``tables``,
        replacing those tables' files of the same run id (``snapshot``: every earlier file, whoever
        wrote it; ``replace`` False: none). Returns files replaced per table.

        Atomic for every later writer: the whole change (the moves, then the deletes) is first
        written as one intent under ``_journal/``, then applied, then the intent removed. A crash
        at any instant leaves either the old files or an intent that :meth:`recover` -- run by
        every writer before it reads the output -- rolls forward to the new ones; never a table
        with neither (an identity snapshot that vanished would rename every person on the rerun)."""
        from facepipe.storage import lease

        stray = sorted({f.split("/", 1)[0] for f in staged} - set(tables))
        if stray:
            raise ValueError(f"staged files of tables {stray} are not among the published tables {tables}")
        lease.check(self)  # a writer that lost the output's lease stops before it publishes
        old = {t: self.part_files(t, None if snapshot else run_id) if replace else [] for t in tables}
        intent = {
            "run_id": run_id,
            "tables": list(tables),
            "moves": sorted(staged),
            "deletes": [self.relative(f) for t in tables for f in old[t]],
        }
        path = self.path(JOURNAL, f"{run_id}-{uuid.uuid4().hex[:8]}.json")
        self.atomic_write(path, json.dumps(intent).encode())
        self._roll_forward(path, intent)
        return {t: len(files) for t, files in old.items()}

    def _roll_forward(self, path: str, intent: dict) -> None:
        """Apply a publish intent (each step skipped when already done), then drop it."""
        fs = self.fs
        for rel in intent["moves"]:  # the new files first: a reader never finds the table empty
            src = self.staging_path(intent["run_id"], rel)
            if fs.get_file_info(src).type != pafs.FileType.NotFound:
                fs.create_dir(self.path(rel).rsplit("/", 1)[0], recursive=True)
                fs.move(src, self.path(rel))
        for rel in intent["deletes"]:
            if fs.get_file_info(self.path(rel)).type != pafs.FileType.NotFound:
                fs.delete_file(self.path(rel))
        self.clear_staging(intent["run_id"], tuple(intent["tables"]))
        fs.delete_file(path)

    def recover(self) -> int:
        """Finish the publishes a crashed writer left half done (``_journal/``); returns how many."""
        intents = self.files(JOURNAL, suffix=".json")
        for path in intents:
            data = fsio.read_bytes(self.fs, path)
            try:
                intent = json.loads(data)
                _ = intent["run_id"], intent["tables"], intent["moves"], intent["deletes"]
            except (ValueError, KeyError, TypeError) as e:  # damaged from outside: intents are written whole
                raise UserError(
                    f"the publish journal {fsio.to_uri(self.fs, path)} cannot be read ({type(e).__name__}): the "
                    "publish it records may be half done, so nothing is written to this output until it is dealt "
                    "with -- restore the file (a backup, the bucket's versions); if there is none, move it aside "
                    "and run with --full, which processes every input again and replaces what a half-done publish "
                    "left (docs/operations.md)"
                ) from None
            self._roll_forward(path, intent)
        return len(intents)


def as_output(output: str | Output) -> Output:
    """An :class:`Output` for a URI (its encryption setting read now), or the one given."""
    return output if isinstance(output, Output) else Output.open(output)
