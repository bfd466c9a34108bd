"""The extract chain, declared once as data: read -> drop erased -> decode -> detect/align/embed ->
write. Each executor interprets the same list (as datatrove's executors interpret one pipeline):

- ``facepipe.run.ray_executor``: Ray Data -- the read is a datasource, each step a ``map_batches``
  (a function as tasks, a class as an actor pool), its resources chosen by its role;
- ``facepipe.run.local_executor``: worker processes on this machine -- the steps before the first
  ``write`` step run in the workers, unit by unit, the rest in the driver, where rows gather.

A step added, reordered or re-parameterised here runs under both (``tests/run/test_steps.py``
runs one chain under each on the same photos and compares the tables).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable, Literal

from facepipe.run.actors import DetectActor, EmbedActor, FaceActor
from facepipe.stages import write as writer
from facepipe.stages.decode import decode_batch
from facepipe.stages.read.sources import ReadConfig
from facepipe.storage.output import Output
from facepipe.storage.tombstones import Tombstones, drop_erased_rows

if TYPE_CHECKING:
    from facepipe.config import RunConfig

#: what a step's work needs, which its executor turns into resources: ``cpu`` -- a CPU task
#: beside the read (Ray fuses these into the read task); ``model`` -- the model actor pool (GPU
#: when there is one); ``write`` -- where the rows gather to be written into staging
Role = Literal["cpu", "model", "write"]


@dataclass(frozen=True)
class Step:
    """One step of the chain. ``fn``: a batch function, or a class whose instance (built once per
    actor or per run, ``kwargs`` its constructor's) is called on each batch; ``kwargs``: the
    function's keyword arguments otherwise. ``batch_format``: the batch ``fn`` takes (``numpy``: a
    dict of arrays; ``pyarrow``: a table). ``batch_size``: rows per call (None: batches as they
    come, one read block each)."""

    name: str
    fn: Callable[..., Any] | type
    kwargs: dict = field(default_factory=dict)
    batch_format: Literal["numpy", "pyarrow"] = "numpy"
    batch_size: int | None = None
    role: Role = "cpu"

    @property
    def is_class(self) -> bool:
        return isinstance(self.fn, type)


@dataclass(frozen=True)
class Chain:
    """The input units' reader settings and the steps their rows go through."""

    read: ReadConfig
    steps: tuple[Step, ...]


def extract_chain(cfg: RunConfig, out: Output, tombstones: Tombstones) -> Chain:
    """The job's extract chain for ``cfg``: erased images dropped before a pixel is decoded
    (only when there are erasures), decode, the models (one actor for detect + align + embed, or
    two with ``compute.embed_pool``), and the staged write (erased faces dropped)."""
    steps = []
    if tombstones.image_ids or tombstones.source_prefixes:
        steps.append(Step("drop_erased", drop_erased_rows, {"tombstones": tombstones}))
    steps.append(Step("decode", decode_batch, {"config": cfg.decode}))
    device, size = cfg.compute.device, cfg.detect.batch_size
    if cfg.compute.embed_pool:
        steps.append(Step("detect", DetectActor, {"detect": cfg.detect, "device": device}, "numpy", size, "model"))
        embed = {"embed": cfg.embed, "decode": cfg.decode, "device": device}
        steps.append(Step("embed", EmbedActor, embed, "pyarrow", size, "model"))
    else:
        faces = {"detect": cfg.detect, "embed": cfg.embed, "decode": cfg.decode, "device": device}
        steps.append(Step("faces", FaceActor, faces, "numpy", size, "model"))
    written = {"output": out, "run_id": cfg.run_id, "dt": cfg.dt, "erased_faces": tombstones.face_ids}
    steps.append(Step("write", writer.write_batch, written, "pyarrow", cfg.compute.rows_per_file, "write"))
    return Chain(cfg.read, tuple(steps))
