"""The run's whole configuration, one tree: :class:`RunConfig` and its sections.

Each stage declares its own config beside its code (``ReadConfig`` in ``stages.read.sources``,
``DetectConfig`` in ``stages.detect.stage``, ...); this module roots them in one tree, declares the run's
own parts (:class:`ComputeConfig`: executors and resources) and turns the tree into and out of
plain data:

- the command line: every flag is declared on its field (``facepipe.flags``) and the CLI walks the
  tree (:func:`facepipe.flags.sections`) -- no list of config classes anywhere else;
- a config file (``facepipe run --config FILE``, TOML, YAML or JSON, the tree's nesting:
  ``[detect] name = "retinaface"``), flags given on the command line laid over it;
- a past run (``facepipe run --like OUT/_runs/RUN_ID.json``): the config its manifest recorded,
  so a past night is rerun exactly (a fresh run id unless one is given).

Every default is defined once, on its field (``tests/test_config.py`` looks for copies).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import secrets
import typing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import PurePosixPath
from typing import Any

from facepipe.errors import UserError
from facepipe.flags import Flag, flag, positive_float, positive_int, section, section_type, titled
from facepipe.stages.cluster.stage import ClusterConfig
from facepipe.stages.decode import DecodeConfig
from facepipe.stages.detect.stage import DetectConfig
from facepipe.stages.embed.stage import EmbedConfig
from facepipe.stages.read.sources import ReadConfig
from facepipe.stages.score.stage import ScoreConfig
from facepipe.storage.crypto import EncryptionConfig


@dataclass(frozen=True)
class ComputeConfig:
    """Parallelism and resources.

    detect_actors_min/max: size bounds of the model actor pool; ``max`` None = one per unit of
    ``model_resource`` when it is set, else one per GPU when the cluster has GPUs, else as many
    as fill half the cluster's CPUs (the other half decodes and writes); ``min`` None = ``max``:
    a batch job keeps its whole pool busy from the start (a pool growing from one actor started
    the second seconds late, bench/RESULTS.md).
    cpus_per_detect_actor: CPU slots per model actor (None = 1 with a GPU, 0.5 on CPU-only
    clusters: measured faster than 1, see bench/RESULTS.md "actor layout").
    torch_threads: torch's intra-op threads per actor (None = the actor's CPU slots, at least 1).
    read_parallelism: read tasks (None = 2 per cluster CPU, at most one per input unit).
    decode_task_memory: bytes reserved per read+decode task (a decode call takes one read block:
    ``ReadConfig.rows_per_block`` images). rows_per_file: images per output file. embed_pool: see below.
    model_resource: a custom resource (``ray start --resources '{"NAME": N}'``) each model actor
    asks one unit of, so the pool lives on the nodes meant for it (say, GPU nodes of one kind).
    shared_paths: local paths are visible at the same place on every node; without it a local
    path on a multi-node cluster is refused (``facepipe.storage.locality``).
    executor / local_max_bytes: where the pipeline runs (``facepipe.run.local_executor`` says when Ray's
    start-up is not worth it).
    device: where every model runs: "auto" (CUDA when the actor has a GPU), "cpu" or "cuda".
    stall_timeout_s: the liveness bound on the extract's wait (``facepipe.run.ray_executor``,
    ``facepipe.run.local_executor``): long enough for an autoscaler to add nodes, short enough
    that a hung night ends before the next one starts.
    """

    device: str = flag(
        "auto",
        "--device",
        "where the models run (auto: CUDA when the actor has a GPU)",
        choices=("auto", "cpu", "cuda"),
    )

    detect_actors_min: int | None = flag(
        None,
        "--detect-actors",
        "minimum model actors (detect + align + embed; default: the maximum, a pool of fixed size)",
        type=positive_int,
    )
    detect_actors_max: int | None = flag(
        None,
        "--max-detect-actors",
        "maximum model actors (default: one per GPU, else enough to fill half the CPUs)",
        type=positive_int,
    )
    cpus_per_detect_actor: float | None = flag(
        None,
        "--cpus-per-actor",
        "CPU slots per model actor (default: 1 with a GPU, 0.5 on CPU-only clusters)",
        type=positive_float,
    )
    model_resource: str | None = flag(
        None,
        "--model-resource",
        "a custom Ray resource (ray start --resources) each model actor asks 1 of: the actors run only on "
        "the nodes that advertise it, one per unit (default: any node)",
    )
    shared_paths: bool = flag(
        False,
        "--shared-paths",
        "local input/output paths are mounted at the same place on every node (NFS, EFS, Lustre): use them on a "
        "multi-node cluster",
        action="store_true",
    )
    executor: str = flag(
        "auto",
        "--executor",
        "ray: a Ray Data pipeline (a local cluster unless --ray-address); local: worker processes on this machine, "
        "no Ray; auto: local for a small job on local paths with no cluster to join, else ray",
        choices=("auto", "ray", "local"),
    )
    #: --executor auto runs a job without Ray up to this many bytes of input (~2,000 ordinary photos):
    #: below it, Ray's ~12 s of start-up is most of the run (facepipe.run.local_executor)
    local_max_bytes: int = 256 << 20
    torch_threads: int | None = None
    read_parallelism: int | None = None
    decode_task_memory: int = 1 << 30
    rows_per_file: int = flag(4096, "--rows-per-file", "images per output Parquet file", type=positive_int)
    stall_timeout_s: float = flag(
        1800.0,
        "--stall-timeout",
        "seconds without progress (no task or batch of any step finished; locally, no CPU used by the workers) "
        "after which the run ends unpublished instead of waiting forever",
        type=positive_float,
    )
    #: Ray Data's target block size for the run. Its default (128 MiB) made one block of a read
    #: task's 50 photos, so an actor got 50 at once and the pool idled until whole blocks were
    #: decoded; 4 MiB keeps a few photos per block streaming (bench/RESULTS.md, "Speed on ordinary photos").
    target_block_bytes: int = 4 << 20
    #: False (default): detect, align and embed in one actor pool. True: a second actor pool for
    #: align + embed (same resources per actor); see bench/RESULTS.md for the measured difference.
    embed_pool: bool = False


@dataclass(frozen=True)
class RunConfig:
    """One run of the job: what it reads and writes, under which date and id, and every stage's
    settings. ``full``: process every input unit, not only those new or changed since the runs
    already published. ``encryption``: encrypt the biometric columns (``facepipe.storage.crypto``);
    once an output is encrypted every run follows its recorded setting, so None means "as the
    output already is"."""

    inputs: tuple[str, ...] = ()
    output: str = ""
    dt: str = flag("", "--dt", "date partition YYYY-MM-DD (default: today, UTC)")
    run_id: str = flag("", "--run-id", "run id; rerunning an id replaces its files only")
    full: bool = flag(
        False, "--full", "process every input again (default: new or changed ones) and re-cluster", action="store_true"
    )
    read: ReadConfig = titled(ReadConfig, "inputs")
    decode: DecodeConfig = titled(DecodeConfig, "decoding")
    detect: DetectConfig = titled(DetectConfig, "detection")
    embed: EmbedConfig = titled(EmbedConfig, "embedding")
    score: ScoreConfig = titled(ScoreConfig, "outlier scoring (the final stage)")
    cluster: ClusterConfig = titled(ClusterConfig, "identities (clustering over the whole archive)")
    compute: ComputeConfig = titled(ComputeConfig, "resources")
    encryption: EncryptionConfig | None = section(EncryptionConfig, "protection at rest (docs/privacy.md)")

    def paths(self) -> list[str]:
        """Every path the run reads or writes: the inputs, the input manifest, the output."""
        return [*self.inputs, *([self.read.manifest] if self.read.manifest else []), self.output]

    def resolved(self) -> RunConfig:
        """Fill the run date (today, UTC) and a fresh run id when not given."""
        now = datetime.now(timezone.utc)
        dt = self.dt or now.strftime("%Y-%m-%d")
        run_id = self.run_id or f"{now.strftime('%Y%m%dT%H%M%SZ')}-{secrets.token_hex(3)}"
        return dataclasses.replace(self, dt=dt, run_id=run_id)


def to_dict(cfg: Any) -> dict:
    """A config as plain data (what a run's manifest records; :func:`from_dict` reads it back)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


def from_dict(cls: type, data: dict, where: str = "") -> Any:
    """``cls`` from plain data (a config file, a manifest's ``config``): sections nested, lists
    where the field holds a tuple made tuples, each value checked as its flag checks it. A key
    that is no field of ``cls`` is a :class:`UserError` naming it and the known ones."""
    if not isinstance(data, dict):
        raise UserError(f"{where.rstrip('.') or 'config'}: expected a table of settings, got {data!r}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{where}{unknown[0]}: not a setting; known here: {', '.join(sorted(fields))}")
    hints = typing.get_type_hints(cls)
    values = {}
    for name, value in data.items():
        f, path = fields[name], where + name
        sub = section_type(f)
        if sub is not None:
            values[name] = None if value is None and f.default is None else from_dict(sub, value, path + ".")
        else:
            values[name] = _value(f, hints[name], value, path)
    try:
        return cls(**values)
    except (TypeError, ValueError) as e:
        raise UserError(f"{where.rstrip('.') or 'config'}: {e}") from None


def _value(f: dataclasses.Field, hint: Any, value: Any, path: str) -> Any:
    if isinstance(value, list) and "tuple" in str(hint):
        return tuple(value)
    spec: Flag | None = f.metadata.get("flag")
    if spec is not None and value is not None:
        if spec.choices and value not in spec.choices:
            raise UserError(f"{path}: {value!r} is not one of {', '.join(map(str, spec.choices))}")
        if spec.type is not None:
            try:
                spec.type(str(value))
            except (argparse.ArgumentTypeError, ValueError) as e:
                raise UserError(f"{path}: {e}") from None
    return value


def merged(base: dict, over: dict) -> dict:
    """``over`` laid onto ``base``, table by table."""
    out = dict(base)
    for k, v in over.items():
        out[k] = merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def read_config_file(path: str) -> dict:
    """A config file's settings (local or ``s3://``): TOML (``.toml``), YAML (``.yaml``/``.yml``)
    or JSON; a run manifest (``_runs/RUN_ID.json``) gives the config it recorded."""
    from facepipe.storage import fs as fsio

    kind = {".toml": "TOML", ".yaml": "YAML", ".yml": "YAML"}.get(PurePosixPath(path).suffix, "JSON")
    try:
        text = fsio.read_bytes(*fsio.resolve(path)).decode()
    except (OSError, ValueError) as e:
        raise UserError(f"config file {path}: {getattr(e, 'strerror', None) or e}") from None
    try:
        if kind == "TOML":
            try:
                import tomllib
            except ModuleNotFoundError:  # Python 3.10
                import tomli as tomllib
            data = tomllib.loads(text)
        elif kind == "YAML":
            import yaml

            data = yaml.safe_load(text) or {}
        else:
            data = json.loads(text)
    except Exception as e:  # each parser has its own error type; all mean the same here
        raise UserError(f"config file {path}: not valid {kind}: {e}") from None
    if not isinstance(data, dict):
        raise UserError(f"config file {path}: expected a table of settings")
    if "run_id" in data and "config" in data and "counts" in data:  # a run manifest
        data = {k: v for k, v in data["config"].items() if k != "run_id"}
    return data


def leaf_defaults(root: type = RunConfig) -> list[tuple[str, Any]]:
    """``(path, default)`` of every plain field of the tree (sections walked)."""
    out = []
    for f in dataclasses.fields(root):
        sub = section_type(f)
        if sub is not None:
            out += [(f"{f.name}.{p}", d) for p, d in leaf_defaults(sub)]
        elif f.default is not dataclasses.MISSING:
            out.append((f.name, f.default))
    return out


__all__ = [
    "ComputeConfig",
    "RunConfig",
    "from_dict",
    "leaf_defaults",
    "merged",
    "read_config_file",
    "to_dict",
]
