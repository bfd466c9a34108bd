"""`facepipe report`: one self-contained HTML page of a real run, checked as a person sees it --
rendered by headless Chromium (Debian's package; `make test` / `.ci/run` install it) to a
screenshot kept in test-artifacts/, every section present and every thumbnail decoded by the
browser -- plus the page asks for nothing outside itself."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import REPO

from facepipe.run.job import run
from facepipe.tools.report import render, write_report
from testbed import archive

pytestmark = pytest.mark.slow

SECTIONS = ("summary", "failures-by-kind", "stages", "charts", "identities", "outliers", "failed-inputs")
ARTIFACTS = Path(os.environ.get("FACEPIPE_ARTIFACTS", REPO / "test-artifacts"))


def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        pytest.skip(
            "Debian's chromium is not installed (`make test` installs it where it may: apt-get install chromium)"
        )
    return exe


@pytest.fixture(scope="module")
def report(ray_cluster, photos, tmp_path_factory):
    root = tmp_path_factory.mktemp("report")
    arch = archive.build(root / "archive", photos)
    out = root / "out"
    run(archive.run_config(arch.inputs, out, "night1"))
    return out, Path(write_report(str(out)))


def test_report_lands_beside_the_manifest_and_is_self_contained(report):
    out, path = report
    assert path == out / "_runs" / "night1.html"
    page = path.read_text()
    for s in SECTIONS:
        assert f'id="{s}"' in page, s
    # nothing fetched from anywhere: no http(s) URL in src/href, no script; images are data URIs
    assert not re.search(r'(src|href)="(?!data:)', page)
    assert "<script" not in page
    thumbs = re.findall(r'src="data:image/jpeg;base64,([^"]+)"', page)
    assert len(thumbs) >= 10
    import base64

    for b in thumbs:
        img = cv2.imdecode(np.frombuffer(base64.b64decode(b), np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and max(img.shape[:2]) == 96
    for kind in ("corrupt", "empty", "not_image", "too_large"):  # the archive's broken files, by kind
        assert f"<td>{kind}</td>" in page
    assert "threshold" in page  # the DROCC chart's threshold marker


def test_report_renders_in_chromium_with_every_thumbnail_loaded(report, tmp_path):
    exe = _chromium()
    out, path = report
    shot = tmp_path / "report.png"  # this session's own; kept in ARTIFACTS once checked
    base = [exe, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--allow-file-access-from-files"]
    r = subprocess.run(
        [*base, "--window-size=1200,2600", f"--screenshot={shot}", path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    png = cv2.imread(str(shot))
    assert png.shape[1] == 1200 and (png < 200).any(axis=2).mean() > 0.02, "the screenshot is (nearly) blank"
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shutil.copy(shot, ARTIFACTS / f".report.png.{os.getpid()}")
    os.replace(
        ARTIFACTS / f".report.png.{os.getpid()}", ARTIFACTS / "report.png"
    )  # whole, even with two sessions at once
    # The page has no script (its CSP forbids one). A copy with a probe appended asks the browser
    # itself whether every <img> decoded and every section is laid out, and prints the answer.
    probe = tmp_path / "probe.html"
    page = re.sub(r'<meta http-equiv="Content-Security-Policy"[^>]*>', "", path.read_text())
    js = (
        "<script>window.onload=()=>{const im=[...document.images];const "
        "bad=im.filter(i=>!(i.complete&&i.naturalWidth>0)).length;"
        f"const secs={list(SECTIONS)!r}.filter(s=>{{const e=document.getElementById(s);"
        "return e&&e.getBoundingClientRect().height>0}).length;"
        "document.title=`PROBE images=${im.length} broken=${bad} sections=${secs}`;}</script>"
    )
    probe.write_text(page.replace("</body>", js + "</body>"))
    r = subprocess.run(
        [*base, "--virtual-time-budget=5000", "--dump-dom", probe.as_uri()], capture_output=True, text=True, timeout=120
    )
    m = re.search(r"PROBE images=(\d+) broken=(\d+) sections=(\d+)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr[-2000:]
    images, broken, sections = map(int, m.groups())
    assert images >= 10 and broken == 0 and sections == len(SECTIONS)


def test_report_of_an_unknown_run_is_a_one_line_error(report, capsys):
    from facepipe.cli import main

    out, _ = report
    assert main(["report", "--output", str(out), "--run-id", "nope"]) == 2
    assert "no run nope" in capsys.readouterr().err
    page, m = render(str(out), dt="2026-11-01")
    assert m.run_id == "night1" and page.startswith("<!doctype html>")
