"""Detection evaluation: ground-truth readers and metrics on hand-made cases with known values."""

import subprocess
import sys

import numpy as np
import pytest

from facepipe.evaluate import GroundTruth, average_precision, evaluate, load_ground_truth, load_wider

WIDER = """\
0--Parade/a.jpg
2
10 10 20 20 0 0 0 0 0 0
100 100 20 20 0 0 0 1 0 0
1--Handshaking/b.jpg
0
0 0 0 0 0 0 0 0 0 0
2--Demonstration/c.jpg
1
50 50 30 30 1 0 0 0 1 0
"""


def _gt(*boxes, ignore=()):
    b = np.asarray(boxes, np.float32).reshape(-1, 4)
    return GroundTruth(b, np.asarray([i in ignore for i in range(len(b))], bool))


def test_wider_reader_handles_empty_images_and_invalid_faces(tmp_path):
    p = tmp_path / "wider_face_val_bbx_gt.txt"
    p.write_text(WIDER)
    gt = load_wider(p)
    assert list(gt) == ["0--Parade/a.jpg", "1--Handshaking/b.jpg", "2--Demonstration/c.jpg"]
    np.testing.assert_array_equal(gt["0--Parade/a.jpg"].boxes, [[10, 10, 30, 30], [100, 100, 120, 120]])
    assert gt["0--Parade/a.jpg"].ignore.tolist() == [False, True]  # invalid flag
    assert gt["1--Handshaking/b.jpg"].boxes.shape == (0, 4)
    assert load_ground_truth(p)[1] == "wider"


def test_bad_wider_file_names_the_line(tmp_path):
    p = tmp_path / "gt.txt"
    p.write_text("a.jpg\ntwo\n")
    with pytest.raises(ValueError, match="not WIDER FACE ground truth near line 1"):
        load_wider(p)


def test_perfect_detections_score_one():
    gt = {"a": _gt([0, 0, 10, 10], [20, 20, 30, 30])}
    r = evaluate(gt, {"a": (gt["a"].boxes, np.array([0.9, 0.8], np.float32))})
    assert (r.recall, r.precision, r.ap) == (1.0, 1.0, 1.0)


def test_known_ap_with_a_false_positive_ranked_in_between():
    """Scores: TP 0.9, FP 0.8, TP 0.7 over 2 faces -> PR points (0.5, 1), (0.5, 0.5), (1, 2/3);
    all-point AP = 0.5 * 1 + 0.5 * 2/3 = 0.8333."""
    gt = {"a": _gt([0, 0, 10, 10], [20, 20, 30, 30])}
    det = np.array([[0, 0, 10, 10], [50, 50, 60, 60], [20, 20, 30, 30]], np.float32)
    r = evaluate(gt, {"a": (det, np.array([0.9, 0.8, 0.7], np.float32))}, score_threshold=0.75)
    assert r.ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert (r.true_positives, r.false_positives, r.detections) == (1, 1, 2)  # at score >= 0.75
    assert r.recall == 0.5 and r.precision == 0.5


def test_duplicates_are_false_positives_and_ignored_faces_are_neutral():
    gt = {"a": _gt([0, 0, 10, 10], [40, 40, 50, 50], ignore=(1,))}
    det = np.array([[0, 0, 10, 10], [0, 0, 10, 10.5], [40, 40, 50, 50]], np.float32)
    r = evaluate(gt, {"a": (det, np.array([0.9, 0.8, 0.95], np.float32))})
    assert (r.faces, r.true_positives, r.false_positives) == (1, 1, 1)  # duplicate FP; ignored match dropped


def test_dlib_rule_counts_a_centre_inside_a_tight_box():
    gt = {"a": _gt([10, 10, 20, 20])}  # tight eyes-to-mouth square
    det = np.array([[0, 0, 32, 32]], np.float32)  # detector box around it: IoU 0.1, centre inside
    assert evaluate(gt, {"a": (det, np.array([0.9], np.float32))}, "iou").recall == 0.0
    assert evaluate(gt, {"a": (det, np.array([0.9], np.float32))}, "dlib").recall == 1.0


def test_average_precision_of_empty_and_monotone_curves():
    assert average_precision(np.array([]), np.array([])) == 0.0
    assert average_precision(np.array([0.5, 1.0]), np.array([1.0, 1.0])) == 1.0


def test_eval_detect_cli_on_a_hand_written_wider_file(tmp_path, photos):
    """The command line end to end, with WIDER-format boxes written by hand for two real photos."""
    (tmp_path / "images" / "0--People").mkdir(parents=True)
    for n in ("obama.jpg", "t1.jpg"):
        (tmp_path / "images" / "0--People" / n).write_bytes(photos[n].read_bytes())
    from facepipe.decode import DecodeConfig, decode_image
    from facepipe.detect.stage import DetectConfig, detect_images
    from facepipe.registry import create_model

    det = create_model("centerface", kind="detector")
    lines = []
    for n in ("obama.jpg", "t1.jpg"):  # ground truth = CenterFace's boxes, plus one face it cannot find
        d = decode_image(photos[n].read_bytes(), DecodeConfig())
        (f,) = detect_images(det, [d.pixels], [(d.scale_x, d.scale_y)], [(d.width, d.height)], DetectConfig())
        rows = [f"{b[0]:.1f} {b[1]:.1f} {b[2] - b[0]:.1f} {b[3] - b[1]:.1f} 0 0 0 0 0 0" for b in f.boxes]
        if n == "t1.jpg":
            rows.append("1 1 5 5 0 0 0 0 0 0")
        lines += [f"0--People/{n}", str(len(rows)), *rows]
    (tmp_path / "gt.txt").write_text("\n".join(lines) + "\n")
    r = subprocess.run([sys.executable, "-m", "facepipe.cli", "eval-detect", str(tmp_path / "images"), "--boxes", str(tmp_path / "gt.txt")],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert "wider ground truth" in r.stdout and "faces     8" in r.stdout and "recall 0.875  precision 1.000" in r.stdout, r.stdout
