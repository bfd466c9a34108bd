"""The outlier stage on real photos, end to end: the job run as a user who wants every face would
run it (the 1 MB RetinaFace of ../shared at --score-threshold 0.3) over the demo photos, the
PASCAL photos of ../shared (18 hand-marked faces) and scikit-image photos without people.

Its false detections -- every detection on the photos without people, and those on the PASCAL
photos that match no hand-marked face -- are flagged; no real face is (the demo photos'
detections are all real faces, checked by hand: bench/accuracy/outlier_eval.py); and the flagged ones join
no identity (face_identity.status 'outlier'); the run report shows them as thumbnails, each with
the reason it was flagged."""

import re
import shutil
import subprocess
import sys
from pathlib import Path

import duckdb
import numpy as np
import pytest
from PIL import Image
from skimage import data as skd

from facepipe.config import RunConfig
from facepipe.run.job import run
from facepipe.stages.detect.stage import DetectConfig
from facepipe.stages.read.sources import ReadConfig
from facepipe.stages.score.outliers import REASONS
from facepipe.tools.evaluate import load_imglab, match_dlib
from facepipe.tools.report import ReportConfig, write_report

NO_PEOPLE = ("gravel", "coins", "coffee", "cat", "moon", "hubble_deep_field")


@pytest.mark.slow
def test_false_detections_are_flagged_and_left_out_of_identities(ray_cluster, photos, shared_dir, tmp_path):
    root = tmp_path / "archive"
    root.mkdir()
    for name, path in photos.items():
        shutil.copy(path, root / name)
    for path in (shared_dir / "data" / "pascal_faces_dev").glob("*.jpg"):
        shutil.copy(path, root / path.name)
    for name in NO_PEOPLE:
        a = getattr(skd, name)()
        Image.fromarray(np.stack([a] * 3, -1) if a.ndim == 2 else a[..., :3]).save(root / f"noface-{name}.png")
    weights = shared_dir / "data" / "retinaface" / "mnet025_face_detector_1mb.pth"
    m = run(
        RunConfig(
            inputs=(str(root),),
            output=str(tmp_path / "out"),
            dt="2026-11-01",
            run_id="r1",
            read=ReadConfig(),
            detect=DetectConfig(name="retinaface", weights=str(weights), config="mnet025_1mb", score_threshold=0.3),
        )
    )
    out = tmp_path / "out"
    rows = duckdb.sql(f"""
        select i.source_uri, f.det_score, o.outlier_score, o.is_outlier, fi.identity_id, fi.status,
               [f.x1, f.y1, f.x2, f.y2], f.x2 - f.x1
        from read_parquet('{out}/faces/*/*.parquet') f
        join read_parquet('{out}/images/*/*.parquet') i using (image_id)
        join read_parquet('{out}/face_outliers/*/*.parquet') o using (face_id)
        join read_parquet('{out}/face_identity/*/*.parquet') fi using (face_id)""").fetchall()
    assert len(rows) == m.counts.faces and m.score["outliers"] == sum(r[3] for r in rows)
    marked = load_imglab(shared_dir / "data" / "pascal_faces_dev" / "training.xml")

    def is_face(uri: str, box: list[float]) -> bool:
        name = Path(uri).name
        if name.startswith("noface-"):
            return False
        if name in marked:
            return bool(match_dlib(marked[name], np.array([box], np.float32)).any())
        return True

    junk = [r for r in rows if not is_face(r[0], r[6])]
    real = [r for r in rows if is_face(r[0], r[6])]
    flagged = [r for r in junk if r[3]]
    print(f"{len(junk)} false detections, {len(flagged)} flagged; {len(real)} real faces")
    assert len(junk) >= 5 and len(flagged) >= 0.8 * len(junk), junk
    assert len(real) >= 20 and not [r for r in real if r[3]], [r for r in real if r[3]]
    assert all(r[4] is None and r[5] == "outlier" for r in flagged)
    # a real face is in an identity, or left out as narrower than --cluster-min-face (40 px)
    assert all((r[4] is not None and r[5] == "assigned") or r[5] == "too_small" for r in real), real
    assert sum(r[5] == "assigned" for r in real) >= 20
    # the run report shows the flagged detections as thumbnails, for a person to check
    page = Path(write_report(str(out), run_id="r1")).read_text()
    section = page[page.index('<section id="outliers">') :]
    section = section[: section.index("</section>")]
    tiles = re.findall(r'<div class="face"><img src="data:image/[^"]+" alt="face"><div>([^<]*)</div></div>', section)
    # each with the part of the score that flagged it (facepipe.stages.score.outliers.REASONS)
    why = "|".join(REASONS)
    assert len(tiles) == ReportConfig().outliers and all(re.search(f" flagged: ({why})$", t) for t in tiles), tiles


def test_faces_blurred_past_identifying_are_flagged_as_blurred_chips(photos, tmp_path):
    """A face so blurred that its embedding no longer says who it is (sigma 5% of its width: dlib's
    embedding moves ~0.55 from the sharp face's) is still a face to the verifier and typical to
    DROCC; the detail term flags it ('blurred chip') and the identities leave it out, while the
    same photos unblurred are not flagged, and the run's summary counts them by reason (the job for
    real, the local executor, the demo photos)."""
    import cv2

    root = tmp_path / "archive"
    root.mkdir()
    for name, path in photos.items():
        shutil.copy(path, root / name)
    ok = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "run", str(root), "-o", str(tmp_path / "a"), "--executor", "local"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ok.returncode == 0, ok.stderr[-2000:]
    boxes = duckdb.sql(f"""select regexp_extract(i.source_uri, '[^/]+$'), [f.x1, f.y1, f.x2, f.y2]
        from read_parquet('{tmp_path}/a/faces/*/*.parquet') f join read_parquet('{tmp_path}/a/images/*/*.parquet') i
        using (image_id) where f.x2 - f.x1 >= 40""").fetchall()  # fmt: skip
    for name, (x1, y1, x2, y2) in boxes:  # each face of the photos blurred where it is, in a copy of its photo
        copy = root / f"blurred-{Path(name).stem}.png"
        img = cv2.imread(str(copy if copy.exists() else root / name))
        m = int(0.3 * (x2 - x1))
        a, b, c, d = max(0, int(y1) - m), int(y2) + m, max(0, int(x1) - m), int(x2) + m
        img[a:b, c:d] = cv2.GaussianBlur(img[a:b, c:d], (0, 0), 0.05 * (x2 - x1))
        cv2.imwrite(str(copy), img)
    out = tmp_path / "b"
    r = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "run", str(root), "-o", str(out), "--executor", "local"],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    # the run's summary says why faces were flagged, the blurred ones among them
    assert re.search(r"outliers +\d+ of \d+ faces flagged \((.*, )?\d+ blurred chip", r.stdout + r.stderr), r.stdout
    rows = duckdb.sql(f"""select regexp_extract(i.source_uri, '[^/]+$') like 'blurred-%', o.is_outlier, o.reason,
            o.detail_score, fi.status, i.source_uri
        from read_parquet('{out}/faces/*/*.parquet') f join read_parquet('{out}/images/*/*.parquet') i using (image_id)
        join read_parquet('{out}/face_outliers/*/*.parquet') o using (face_id)
        join read_parquet('{out}/face_identity/*/*.parquet') fi using (face_id)
        where f.x2 - f.x1 >= 40""").fetchall()  # fmt: skip
    # (the partial faces are cut by the photo's border: the chip's fill edge reads as detail, a known limit)
    rows = [r for r in rows if "partial" not in r[5]]
    sharp, blurred = [r for r in rows if not r[0]], [r for r in rows if r[0]]
    assert len(sharp) >= 10 and not [r for r in sharp if r[1]], sharp
    caught = [r for r in blurred if r[1] and r[2] == "blurred chip" and r[3] > 0 and r[4] == "outlier"]
    assert len(blurred) >= 8 and len(caught) >= 0.9 * len(blurred), blurred
