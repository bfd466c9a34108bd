"""Exit codes by cause, as the orchestrator reads them: 2 only for a request checked before any
work (a --drocc-model that is not there fails at once, not after the extraction); the job's own
failure after work began -- a scoring bug after publish -- is exit 1 with its traceback in the
log and one line last, which the submitter retries (exit 2 it never retries)."""

import shutil
import subprocess
import sys

import pytest
from conftest import REPO


def _photos(photos, tmp_path):
    d = tmp_path / "in"
    d.mkdir()
    for name in ("obama.jpg", "biden.jpg"):
        shutil.copy(photos[name], d / name)
    return d


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, str(REPO / "tests" / "faulty_cli.py"), *args]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=280)


@pytest.mark.slow
def test_a_scoring_failure_after_publish_is_exit_1_with_its_traceback_and_one_line_last(photos, tmp_path):
    out = tmp_path / "out"
    r = _run("--fail-in", "score", "--", "run", str(_photos(photos, tmp_path)), "-o", str(out), "--executor", "local",
             "--summary-json", str(tmp_path / "s.json"))  # fmt: skip
    assert r.returncode == 1, r.stderr[-3000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert "Traceback (most recent call last):" in r.stderr
    assert lines[-1].startswith("facepipe run: failed: ValueError: ArrowInvalid: a scoring bug"), lines[-3:]
    assert '"error": "internal"' in (tmp_path / "s.json").read_text()


def test_a_missing_drocc_model_is_exit_2_before_any_work(photos, tmp_path):
    out = tmp_path / "out"
    r = _run("--", "run", str(_photos(photos, tmp_path)), "-o", str(out), "--drocc-model", str(tmp_path / "no.pt"))
    assert r.returncode == 2, r.stderr[-3000:]
    assert r.stderr.strip().splitlines() == [f"facepipe run: error: DROCC model {tmp_path / 'no.pt'} not found"]
    assert not out.exists(), "nothing of the run was written"
