"""Build the outlier model shipped with the package, for runs with too few confident faces to
train their own (the demo: 15 faces; ``ScoreConfig.min_faces`` is 20).

    .venv/bin/python -m bench.accuracy.default_outlier_model --archive /tmp/benchA --shared ../shared

Trained as the score stage trains (``score.outliers.fit``, default ``ScoreConfig``) on the
confident faces the job finds with its defaults (YuNet, dlib_sp5 chips, dlib's ResNet) in the
project's own photos: the demo photos, the PASCAL photos of ``../shared`` and the pasted-face
archive of ``bench/data/outlier_eval.json`` (``testbed/pasted.py``, seed 0). Writes
``facepipe/weights/drocc_default.pt`` and ``drocc_default.json`` (its group, the detector and
align method whose landmark offsets it learned, and the description); the stage uses it only for
faces of that group (``facepipe.stages.score.stage.default_model``).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import record

WEIGHTS = Path(__file__).resolve().parents[2] / "facepipe" / "weights"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", default="/tmp/benchA", help="the pasted-face archive (testbed/pasted.py, seed 0)")
    ap.add_argument("--shared", default=os.environ.get("FACEPIPE_SHARED", "../shared"))
    ap.add_argument("--dest", type=Path, default=WEIGHTS)
    a = ap.parse_args()
    import pyarrow.compute as pc

    from facepipe.stages.score.stage import (
        ScoreConfig,
        confident,
        content_order,
        face_embeddings,
        face_features,
        fit,
        group_of,
    )
    from facepipe.storage.output import Output
    from facepipe.tools.demo import photos
    from testbed import pasted

    archive = Path(a.archive)
    if not (archive / "truth.json").exists():
        pasted.build(archive, 120, 0)
    with tempfile.TemporaryDirectory() as tmp:
        images = Path(tmp) / "images"
        images.mkdir()
        sources = [*photos().values(), *sorted((Path(a.shared) / "data" / "pascal_faces_dev").glob("*.jpg"))]
        sources += sorted((archive / "images").iterdir())
        for k, p in enumerate(sources):
            shutil.copy(p, images / f"{k:04d}-{p.name}")
        out = Path(tmp) / "out"
        cmd = [sys.executable, "-m", "facepipe.cli", "run", str(images), "--output", str(out)]
        subprocess.run([*cmd, "--no-score", "--no-cluster", "--executor", "local", "--dt", "2026-12-06"], check=True)
        faces = Output.open(str(out)).dataset("faces").to_table().sort_by("face_id")
    groups = [group_of(d, al) for d, al in zip(faces.column("detector").to_pylist(), faces.column("align").to_pylist())]
    group = max(set(groups), key=groups.count)
    faces = faces.filter(pc.equal(pc.binary_join_element_wise(faces["detector"], faces["align"], " "), group))
    x, e = face_features(faces), face_embeddings(faces)
    order = content_order(x, e)  # as the stage orders its training sample: not by the ids' paths
    x, e = x[order], e[order]
    keep = confident(x, ScoreConfig())
    model = fit(x[keep], ScoreConfig(), e[keep])
    a.dest.mkdir(parents=True, exist_ok=True)
    (a.dest / "drocc_default.pt").write_bytes(model.to_bytes())
    about = {"group": group, "photos": len(sources), "faces": faces.num_rows, "confident": int(keep.sum())}
    about |= {"model": json.loads(model.describe())}
    (a.dest / "drocc_default.json").write_text(json.dumps(about, indent=2) + "\n")
    print(f"{len(sources)} photos, {faces.num_rows} faces of {group}, {int(keep.sum())} confident: {model.model_id}")
    print(f"threshold {model.threshold:.3f} ({model.threshold_policy}); far-probe AUC {model.far_probe_auc}")
    record.numbers(model_id=model.model_id, group=group, confident=int(keep.sum()), faces=faces.num_rows)


if __name__ == "__main__":
    record.run(main, "bench.accuracy.default_outlier_model")
