"""Control files of an output damaged from outside (a truncated copy, a bad sync, a stray edit):
every one is written whole or not at all, so damage is never the job's own doing -- but a night
that meets it must neither crash with a traceback nor quietly do the wrong thing.

- A state file (``_state/shards/part-RUN.parquet``) that cannot be read: skipping it would process
  its units as new and keep their earlier rows beside the new ones (duplicates). The night says
  so (a warning naming the file), processes those units again, replaces their rows, and moves the
  file aside: the tables equal those of an output never damaged, and the next night is quiet.
- A publish journal (``_journal/*.json``) that cannot be read: the publish it records may be half
  done. The night refuses before writing anything (exit 2, one line naming the file and what to
  do); restoring the file lets it complete, and without it ``--full`` rebuilds the tables.

Real processes, the two nights of ``testbed.nights``."""

import shutil

import pytest

from testbed import nights as two_nights

pytestmark = pytest.mark.slow

THIRD = "2026-11-03"


@pytest.fixture(scope="module")
def nights(photos, tmp_path_factory) -> two_nights.Nights:
    return two_nights.build(photos, tmp_path_factory.mktemp("nights"))


def _clean_copy(nights, tmp_path):
    """The output after both nights, undamaged (the fixture keeps its own)."""
    out = tmp_path / "out"
    shutil.copytree(nights.after_one, out)
    r = two_nights.second(out, nights)
    assert r.returncode == 0, r.stderr[-3000:]
    return out


def test_a_damaged_state_file_is_rebuilt_from_the_rows_its_run_wrote(nights, tmp_path):
    out = _clean_copy(nights, tmp_path)
    damaged = out / "_state" / "shards" / f"part-night-{two_nights.SECOND}.parquet"
    data = damaged.read_bytes()
    damaged.write_bytes(data[: len(data) // 2])  # truncated
    r = two_nights.night(out, nights.two, THIRD)
    assert r.returncode == 0, r.stderr[-3000:]
    warning = next(ln for ln in r.stderr.splitlines() if "cannot be read" in ln)
    assert damaged.name in warning and "6 input units" in warning and "processed again" in warning, warning
    assert two_nights.tables(out) == nights.clean  # each image once, the same faces, ids and identities
    assert not damaged.exists() and [p.name for p in (out / "_state" / "damaged").iterdir()][0].startswith(damaged.name)
    quiet = two_nights.night(out, nights.two, "2026-11-04")
    assert quiet.returncode == 0 and "cannot be read" not in quiet.stderr, quiet.stderr[-3000:]
    assert two_nights.tables(out) == nights.clean


def test_a_damaged_publish_journal_stops_the_night_before_it_writes(nights, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(nights.after_one, out)
    crashed = two_nights.second(out, nights, "--crash-at=publish:face_identity")  # a publish left half done
    assert crashed.returncode == 137, crashed.stderr[-3000:]
    (intent,) = (out / "_journal").iterdir()
    kept = intent.read_bytes()
    intent.write_bytes(kept[:20])
    before = two_nights.tables(out)
    r = two_nights.second(out, nights)
    assert r.returncode == 2, r.stderr[-3000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("facepipe run: error: the publish journal ") and intent.name in last, last
    assert "restore the file" in last and "--full" in last and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert two_nights.tables(out) == before, "nothing written"
    # restored, the night completes the publish and the run
    intent.write_bytes(kept)
    r = two_nights.second(out, nights)
    assert r.returncode == 0, r.stderr[-3000:]
    assert two_nights.tables(out) == nights.clean


def test_without_the_journal_a_full_run_rebuilds_the_tables(nights, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(nights.after_one, out)
    crashed = two_nights.second(out, nights, "--crash-at=publish:face_identity")
    assert crashed.returncode == 137, crashed.stderr[-3000:]
    (intent,) = (out / "_journal").iterdir()
    intent.rename(tmp_path / intent.name)  # lost: moved aside as the message says
    r = two_nights.second(out, nights, extra=("--full",))
    assert r.returncode == 0, r.stderr[-3000:]
    assert two_nights.tables(out) == nights.clean
