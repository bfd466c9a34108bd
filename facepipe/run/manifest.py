"""What a run did, as typed records: the totals of the write stage's ``BatchStats``
(``facepipe.stages.write``) and :class:`RunManifest` (the run's record, written last to
``OUT/_runs/RUN_ID.json`` by :func:`write_manifest`). The CLI, the report, the summary and the nightly job read them by
attribute; the manifest's JSON layout (docs/operations.md) stays stable: ``RunManifest.to_json`` and
``from_json`` are its only writer and reader."""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from facepipe.storage.output import RUNS, Output

log = logging.getLogger(__name__)


@dataclass
class Counts:
    input_units: int = 0
    units_processed: int = 0
    units_skipped: int = 0
    units_replaced: int = 0
    images: int = 0
    images_ok: int = 0
    images_failed: int = 0
    failures_by_status: dict[str, int] = field(default_factory=dict)
    faces: int = 0
    #: rows removed per table from earlier runs of changed units (publish)
    rows_purged: dict[str, int] = field(default_factory=dict)
    #: input units with unreadable images, processed again by the next run
    units_to_retry: list[str] = field(default_factory=list)


@dataclass
class Timing:
    list_s: float = 0.0
    pipeline_s: float = 0.0
    #: task seconds per stage, summed over workers (stages overlap)
    stage_task_s: dict[str, float] = field(default_factory=dict)
    images_per_s: float | None = None
    #: before pipeline_s: connecting to Ray, or starting a local cluster (the models are built
    #: meanwhile); None: the run went without Ray (facepipe.run.local_executor)
    ray_start_s: float | None = None
    #: task seconds of all stages / pipeline_s: cores the stages kept busy
    cores_busy: float | None = None
    publish_s: float | None = None
    score_s: float | None = None
    cluster_s: float | None = None
    wall_s: float | None = None


@dataclass
class RunManifest:
    run_id: str
    dt: str
    inputs: list[str]
    output: str
    detector: str = ""
    embedder: str = ""
    #: the RunConfig, as dataclasses.asdict
    config: dict[str, Any] = field(default_factory=dict)
    counts: Counts = field(default_factory=Counts)
    timing: Timing = field(default_factory=Timing)
    resources: dict[str, Any] = field(default_factory=dict)
    #: the part files the run published, per table
    files: dict[str, list[str]] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    started_at: str = ""
    finished_at: str = ""
    manifest_uri: str = ""
    #: the final stages' summaries (facepipe.stages.score.stage.run_score, facepipe.stages.cluster.stage.run_cluster);
    #: None when the stage was turned off
    score: dict[str, Any] | None = None
    cluster: dict[str, Any] | None = None
    #: where the run report went, when one was written (not part of the JSON: written after it)
    report_uri: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The manifest's JSON object: fields that are None (a stage turned off, a step not run) are left out."""
        d = dataclasses.asdict(self)
        d.pop("report_uri")
        d["timing"] = {k: v for k, v in d["timing"].items() if v is not None or k == "images_per_s"}
        return {k: v for k, v in d.items() if v is not None}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> "RunManifest":
        """Read a manifest's JSON object; fields an older version did not write take their defaults."""
        known = lambda c, src: {f.name: src[f.name] for f in dataclasses.fields(c) if f.name in src}  # noqa: E731
        top = known(cls, d)
        top["counts"] = Counts(**known(Counts, d.get("counts", {})))
        top["timing"] = Timing(**known(Timing, d.get("timing", {})))
        return cls(**top)


def write_manifest(output: Output, manifest: RunManifest) -> str:
    """Write ``OUT/_runs/RUN_ID.json`` (the last step of a run); returns its URI."""
    name = f"{manifest.run_id}.json"
    manifest.manifest_uri = output.uri_of(RUNS, name)
    output.atomic_write(output.path(RUNS, name), json.dumps(manifest.to_json(), indent=2, sort_keys=True).encode())
    return manifest.manifest_uri


def read_manifests(output: Output) -> list[dict[str, Any]]:
    """The JSON objects of every run manifest ``OUT/_runs/*.json`` of ``output`` (none: []); one
    that cannot be parsed (damaged from outside) is left out with a warning naming it."""
    from facepipe.storage import fs as fsio

    runs = []
    for f in output.files(RUNS, suffix=".json") if output.exists(RUNS) else []:
        try:
            runs.append(json.loads(fsio.read_bytes(output.fs, f)))
        except ValueError as e:
            log.warning("run manifest %s cannot be read (%s): left out", fsio.to_uri(output.fs, f), e)
    return runs
