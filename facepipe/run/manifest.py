"""What a run did, as typed records: :class:`BatchStats` (one per written batch, crossing Ray as
one Arrow row of :data:`STATS_SCHEMA`) and :class:`RunManifest` (the run's record, written last to
``OUT/_runs/RUN_ID.json``). The CLI, the report, the summary and the nightly job read them by
attribute; the manifest's JSON layout (docs/operations.md) stays stable: ``RunManifest.to_json`` and
``from_json`` are its only writer and reader."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

import pyarrow as pa

#: the pipeline's stages whose task seconds a batch reports
STAGES = ("decode", "detect", "embed", "write")

STATS_SCHEMA = pa.schema(
    [
        pa.field("n_images", pa.int64()),
        pa.field("n_faces", pa.int64()),
        pa.field("status_counts", pa.list_(pa.struct([("status", pa.string()), ("n", pa.int64())]))),
        *(pa.field(f"t_{s}", pa.float64()) for s in STAGES),
        pa.field("files", pa.list_(pa.string())),
        # source_uri of the images whose bytes could not be read (read_error): their units are retried
        pa.field("unreadable", pa.list_(pa.string())),
    ]
)


@dataclass
class BatchStats:
    """What the write stage did with one batch: images, faces, statuses, task seconds per stage,
    the files it staged and the images it could not read."""

    n_images: int = 0
    n_faces: int = 0
    status_counts: dict[str, int] = field(default_factory=dict)
    stage_s: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    files: list[str] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)

    def to_table(self) -> pa.Table:
        """One STATS_SCHEMA row: how a batch's stats cross Ray Data."""
        row = {
            "n_images": self.n_images,
            "n_faces": self.n_faces,
            "status_counts": [{"status": k, "n": v} for k, v in sorted(self.status_counts.items())],
            **{f"t_{s}": float(self.stage_s.get(s, 0.0)) for s in STAGES},
            "files": self.files,
            "unreadable": self.unreadable,
        }
        return pa.Table.from_pylist([row], schema=STATS_SCHEMA)

    @classmethod
    def from_row(cls, row: dict) -> "BatchStats":
        return cls(
            n_images=row["n_images"],
            n_faces=row["n_faces"],
            status_counts={e["status"]: e["n"] for e in row["status_counts"]},
            stage_s={s: row[f"t_{s}"] for s in STAGES},
            files=list(row["files"]),
            unreadable=list(row["unreadable"]),
        )

    @classmethod
    def total(cls, batches: list["BatchStats"]) -> "BatchStats":
        """The sums over a run's batches (stage seconds rounded to ms)."""
        t = cls()
        for b in batches:
            t.n_images += b.n_images
            t.n_faces += b.n_faces
            for k, v in b.status_counts.items():
                t.status_counts[k] = t.status_counts.get(k, 0) + v
            for k, v in b.stage_s.items():
                t.stage_s[k] = t.stage_s.get(k, 0.0) + v
            t.files += b.files
            t.unreadable += b.unreadable
        t.stage_s = {k: round(v, 3) for k, v in t.stage_s.items()}
        return t


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
