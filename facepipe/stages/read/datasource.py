"""Ray Data adapter of the read stage: a datasource over listed units (see ``sources``)."""

from __future__ import annotations

from ray.data import Dataset, Datasource, ReadTask, read_datasource
from ray.data.block import BlockMetadata

from facepipe.stages.read.sources import READ_SCHEMA, ReadConfig, Unit, read_units, split_units


class ImageArchiveDatasource(Datasource):
    """Reads :class:`Unit` s (image files, tar shards, Parquet files) into READ_SCHEMA blocks.

    Each read task gets a size-balanced group of units and captures only that plain list and the
    config; filesystems are created inside the task from the worker's environment.
    """

    def __init__(self, units: list[Unit], cfg: ReadConfig) -> None:
        self._units = units
        self._cfg = cfg

    def estimate_inmemory_data_size(self) -> int:
        return sum(u.size for u in self._units)

    def get_read_tasks(self, parallelism: int, per_task_row_limit=None, data_context=None) -> list[ReadTask]:
        tasks = []
        for group in split_units(self._units, parallelism):
            meta = BlockMetadata(
                num_rows=None,
                size_bytes=sum(u.size for u in group),
                exec_stats=None,
                input_files=tuple(u.uri for u in group),
            )
            tasks.append(ReadTask(_reader(group, self._cfg), meta, schema=READ_SCHEMA))
        return tasks


def _reader(group: list[Unit], cfg: ReadConfig):
    return lambda: read_units(group, cfg)


def read_images(
    units: list[Unit], cfg: ReadConfig, parallelism: int, num_cpus: float = 1.0, memory: int | None = None
) -> Dataset:
    """A Dataset of READ_SCHEMA rows from ``units``, in up to ``parallelism`` read tasks of
    ``num_cpus`` CPUs (and ``memory`` bytes) each."""
    return read_datasource(
        ImageArchiveDatasource(units, cfg),
        override_num_blocks=max(1, min(parallelism, len(units))),
        num_cpus=num_cpus,
        memory=memory,
    )
