"""Search by face (facepipe.tools.search; issue 30): a query photo of a person returns that
person's other photos first, through the real job's output and the real CLI; --identity adds the
whole identity; a folder of queries is named as given; models other than the archive's are
refused in one line; erased faces are never returned."""

import json
import shutil
import subprocess
import sys

import duckdb
import pytest

from facepipe.tools.search import FaceIndex, QueryFace, search

pytestmark = pytest.mark.slow  # the whole job in a process, once for the module

QUERY = "obama3.jpg"  # a photo of Obama the archive does not hold; it holds four others


def _cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "facepipe.cli", *args], capture_output=True, text=True, timeout=timeout
    )


@pytest.fixture(scope="module")
def archive(photos, tmp_path_factory):
    """The job (defaults, local executor) over the demo photos but the query: its output, and the query folder."""
    root = tmp_path_factory.mktemp("search")
    (root / "photos").mkdir()
    (root / "queries").mkdir()
    for name, path in photos.items():
        shutil.copy(path, root / ("queries" if name == QUERY else "photos") / name)
    r = _cli("run", str(root / "photos"), "--output", str(root / "out"), "--executor", "local")
    assert r.returncode == 0, r.stderr
    return root


def _hits(r: subprocess.CompletedProcess) -> list[dict]:
    assert r.returncode == 0, r.stderr
    return [json.loads(line) for line in r.stdout.splitlines()]


def test_a_photo_of_a_person_finds_their_other_photos_first(archive):
    out, query = archive / "out", archive / "queries" / QUERY
    hits = _hits(_cli("search", "--output", str(out), str(query), "--k", "4", "--json"))
    assert [h["rank"] for h in hits] == [1, 2, 3, 4] and {h["query_face"] for h in hits} == {0}
    assert all(h["query"] == str(query) for h in hits)
    assert [h["distance"] for h in hits] == sorted(h["distance"] for h in hits)
    files = [h["source_uri"].rsplit("/", 1)[-1] for h in hits]
    assert all(f.startswith("obama") for f in files), files  # precision@4 = 1: Obama's four other photos
    assert hits[0]["distance"] < 0.5 and len(hits[0]["box"]) == 4 and hits[0]["identity_id"].startswith("id-")
    faces = duckdb.sql(f"select face_id from read_parquet('{out}/faces/*/*.parquet')").fetchall()
    assert {h["face_id"] for h in hits} <= {f for (f,) in faces}
    table = _cli("search", "--output", str(out), str(query), "--k", "2")
    assert table.returncode == 0 and "distance" in table.stdout and "obama" in table.stdout, table.stderr


def test_identity_adds_every_face_of_the_matched_person(archive):
    import facepipe

    out = archive / "out"
    hits = facepipe.search(str(out), [str(archive / "queries" / QUERY)], k=1, identity=True)  # the Python API
    ident = hits[0].identity_id
    members = duckdb.sql(
        f"select face_id from read_parquet('{out}/face_identity/*/*.parquet') where identity_id = '{ident}'"
    ).fetchall()
    assert len(members) >= 2 and {h.face_id for h in hits} == {f for (f,) in members}
    assert [h.rank for h in hits] == list(range(1, len(hits) + 1))


def test_a_folder_of_queries_is_named_as_given(archive):
    hits = _hits(_cli("search", "--output", str(archive / "out"), str(archive / "queries"), "--k", "1", "--json"))
    assert {h["query"] for h in hits} == {f"{archive / 'queries'}/{QUERY}"}


def test_faces_of_other_models_are_refused_in_one_line(archive):
    """A query embedded by another detector or embedder than the archive's would be compared
    across spaces: refused by name (exit 2), never answered."""
    index = FaceIndex.open(str(archive / "out"))
    other = QueryFace("q.jpg", 0, [0, 0, 1, 1], index.x[0], ("centerface@x", *index.models[1:]))
    with pytest.raises(Exception, match="centerface@x") as e:
        index.search([other])
    assert type(e.value).__name__ == "UserError"
    r = _cli("search", "--output", str(archive / "missing"), str(archive / "queries"))
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr


def test_erased_faces_are_never_returned(archive, tmp_path):
    out = tmp_path / "out"
    shutil.copytree(archive / "out", out)
    query = str(archive / "queries" / QUERY)
    first = search(str(out), [query], k=1, identity=True)
    ident, erased = first[0].identity_id, {h.face_id for h in first}
    assert _cli("forget", "--output", str(out), "--identity-id", ident).returncode == 0
    hits = search(str(out), [query], k=50, identity=True)
    assert hits and ident not in {h.identity_id for h in hits} and not erased & {h.face_id for h in hits}


def test_a_query_that_is_not_an_image_is_named_and_the_others_answered(archive, tmp_path):
    (tmp_path / "broken.jpg").write_bytes(b"not an image")
    shutil.copy(archive / "queries" / QUERY, tmp_path / QUERY)
    r = _cli("search", "--output", str(archive / "out"), str(tmp_path), "--k", "1", "--json")
    assert {h["query"] for h in _hits(r)} == {f"{tmp_path}/{QUERY}"}
    assert "broken.jpg" in r.stderr and "not searched" in r.stderr and "Traceback" not in r.stderr
