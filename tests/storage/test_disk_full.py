"""A full disk at any point of a night: the run stops with one line (exit 3, "disk full", no
traceback), every table is as the night before left it or as the night would have left it (never
half of one), no temp file is left to fill the disk further, and once space is freed the same
command gives the tables of a night that never ran out of space, identity ids included.

A real filesystem that fills: a tmpfs of its own (mounted by the test; needs root, as the CI
and this project's machines run), the output on it. The least free space the second night needs
is found by bisection (to a page, 4 KiB); the night is then run with none and with eighths of it
left, so the disk fills at different writes: the staged files, the publishes after them (the
test asserts that both the extract and the steps after it were hit). The night runs as a real
process (``testbed.nights``)."""

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from testbed import nights as two_nights

pytestmark = pytest.mark.slow

PAGE = 4096


@pytest.fixture(scope="module")
def nights(photos, tmp_path_factory) -> two_nights.Nights:
    return two_nights.build(photos, tmp_path_factory.mktemp("nights"))


@pytest.fixture
def volume(tmp_path) -> Path:
    """A 16 MiB tmpfs of this test's own, unmounted at the end."""
    if os.geteuid() != 0:
        pytest.fail("this test mounts a small tmpfs to fill: it needs root (CI runs as root)")
    vol = tmp_path / "vol"
    vol.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(vol)], check=True)
    try:
        yield vol
    finally:
        subprocess.run(["umount", "-l", str(vol)], check=False)


def _fill(vol: Path, leave: int) -> Path:
    """A file taking all the space of ``vol`` but ``leave`` bytes."""
    filler = vol / "filler"
    free = shutil.disk_usage(vol).free
    with open(filler, "wb") as f:
        f.truncate(0)
        chunk = b"\0" * (1 << 20)
        left = free - leave
        while left > 0:
            left -= f.write(chunk[: min(left, len(chunk))])
    assert shutil.disk_usage(vol).free <= leave + PAGE
    return filler


def _night_with(vol: Path, n: two_nights.Nights, leave: int) -> tuple[Path, subprocess.CompletedProcess]:
    """The second night on a copy of the first night's output in ``vol``, ``leave`` bytes free."""
    out = vol / "out"
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(n.after_one, out)
    filler = _fill(vol, leave)
    try:
        return out, two_nights.second(out, n)
    finally:
        filler.unlink()


@pytest.mark.timeout(900)
def test_a_full_disk_at_any_write_of_a_night_loses_nothing_and_the_rerun_completes_it(nights, volume):
    # the least free space the night needs (to a page), by bisection
    lo, hi = 0, 8 << 20
    assert _night_with(volume, nights, hi)[1].returncode == 0
    while hi - lo > PAGE:
        mid = (lo + hi) // 2 // PAGE * PAGE
        if _night_with(volume, nights, mid)[1].returncode == 0:
            hi = mid
        else:
            lo = mid
    before = two_nights.tables(nights.after_one)
    phases = set()
    for leave in sorted({hi * k // 8 // PAGE * PAGE for k in range(8)} | {lo}):
        out, r = _night_with(volume, nights, leave)
        if r.returncode == 0:  # the bisection's bound is not exact for every page in between
            assert two_nights.tables(out) == nights.clean, leave
            continue
        last = r.stderr.strip().splitlines()[-1]
        assert r.returncode == 3, (leave, r.stderr[-3000:])
        assert last.startswith("facepipe run: disk full error: ") and "No space left on device" in last, last
        assert "free space" in last and "Traceback" not in r.stderr, r.stderr[-3000:]
        now = two_nights.tables(out)
        for t, rows in now.items():  # each table whole: as the first night left it, or as the second leaves it
            assert rows in (before[t], nights.clean[t]), (leave, t)
        phases.add("extract" if now == before else "after publishing")
        assert not [p for p in out.rglob("*.tmp") if "_staging" not in p.parts], (leave, list(out.rglob("*.tmp")))
        again = two_nights.second(out, nights)
        assert again.returncode == 0, (leave, again.stderr[-3000:])
        assert two_nights.tables(out) == nights.clean, leave
        assert not list(out.rglob("*.tmp")), leave
    assert phases == {"extract", "after publishing"}, "the disk filled in the extract and after it"
