"""Protection at rest: the embedding and centroid columns are encrypted (Parquet modular
encryption, plaintext footer). Without the key they cannot be read -- by pyarrow or DuckDB --
while every other column can; with the key they round-trip. End to end, a job on an encrypted
output clusters, scores, erases and reports through the key, and writes no plaintext embedding;
a machine that keeps the key file elsewhere names its copy."""

import base64
import json
import os
import subprocess
import sys

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from facepipe import schema
from facepipe.storage import crypto
from facepipe.storage.crypto import EncryptionConfig
from testbed import archive


def _key_file(path, **keys) -> str:
    path.write_text(json.dumps({k: base64.b64encode(v).decode() for k, v in keys.items()}))
    return str(path)


@pytest.fixture
def enc(tmp_path) -> EncryptionConfig:
    return EncryptionConfig(
        "local", "footer", "bio", _key_file(tmp_path / "keys.json", footer=os.urandom(32), bio=os.urandom(32))
    )


def _faces(n=3, dim=128) -> pa.Table:
    rng = np.random.default_rng(0)
    rows = {f.name: None for f in schema.faces_schema(dim)}
    t = {
        "face_id": [f"f{i}" for i in range(n)],
        "image_id": ["im"] * n,
        "face_index": list(range(n)),
        "x1": [1.0] * n,
        "y1": [2.0] * n,
        "x2": [3.0] * n,
        "y2": [4.0] * n,
        "det_score": [0.9] * n,
        "landmarks": [[0.0] * 10] * n,
        "detector": ["d"] * n,
        "embedding": rng.normal(size=(n, dim)).astype(np.float32).tolist(),
        "embedder": ["e"] * n,
        "align": ["a"] * n,
        "landmark_offsets": [[0.0] * 10] * n,
        "sharpness": [5.0] * n,
        "detail": [-2.0] * n,
        "face_logit": [7.0] * n,
        "run_id": ["r"] * n,
    }
    assert set(t) == set(rows)
    return pa.Table.from_pydict(t, schema=schema.faces_schema(dim))


def test_embedding_is_unreadable_without_the_key_and_the_rest_is_readable(enc, tmp_path):
    path = str(tmp_path / "faces.parquet")
    t = _faces()
    crypto.write_table(t, path, pafs.LocalFileSystem(), enc)
    with pytest.raises(OSError):
        pq.read_table(path, columns=["embedding"])
    plain = pq.read_table(path, columns=["face_id", "det_score", "landmarks"])
    assert plain.column("face_id").to_pylist() == ["f0", "f1", "f2"]
    assert crypto.read_table(path, pafs.LocalFileSystem(), enc).equals(t)
    # DuckDB (what docs/warehouse.md found): plain columns yes, the encrypted column no
    assert duckdb.sql(f"select count(*), min(det_score) from '{path}'").fetchall() == [(3, pytest.approx(0.9))]
    # DuckDB 2.0 says "File is encrypted ..."; 1.5 (the newest for Python 3.10) fails on the
    # ciphertext's bytes ("don't know what type"): either way the column does not come out
    refusal = "encrypted" if int(duckdb.__version__.split(".")[0]) >= 2 else "don't know what type"
    with pytest.raises(duckdb.Error, match=refusal):
        duckdb.sql(f"select embedding from '{path}'").fetchall()
    # the raw bytes do not hold the float32 values
    raw = open(path, "rb").read()
    assert np.asarray(t.column("embedding").to_pylist()[0], np.float32).tobytes()[:16] not in raw


def test_identities_centroid_is_encrypted_and_tables_without_biometrics_stay_plain(enc, tmp_path):
    fs = pafs.LocalFileSystem()
    ident = pa.Table.from_pylist(
        [
            {
                "identity_id": "id-1",
                "n_faces": 2,
                "centroid": [0.5] * 128,
                "representative_face_id": "f0",
                "first_seen_dt": None,
                "last_seen_dt": None,
                "embedder": "e",
                "run_id": "r",
            }
        ],
        schema=schema.IDENTITIES,
    )
    crypto.write_table(ident, str(tmp_path / "i.parquet"), fs, enc)
    with pytest.raises(OSError):
        pq.read_table(tmp_path / "i.parquet", columns=["centroid"])
    assert pq.read_table(tmp_path / "i.parquet", columns=["identity_id"]).num_rows == 1
    crypto.write_table(pa.table({"face_id": ["f0"], "identity_id": ["id-1"]}), str(tmp_path / "fi.parquet"), fs, enc)
    assert pq.read_table(tmp_path / "fi.parquet").num_rows == 1  # nothing biometric: no encryption


def test_a_wrong_key_cannot_decrypt(enc, tmp_path):
    path = str(tmp_path / "faces.parquet")
    crypto.write_table(_faces(), path, pafs.LocalFileSystem(), enc)
    wrong = EncryptionConfig(
        "local", "footer", "bio", _key_file(tmp_path / "other.json", footer=os.urandom(32), bio=os.urandom(32))
    )
    from cryptography.exceptions import InvalidTag

    with pytest.raises(InvalidTag):  # the wrapped column key does not unwrap under the wrong master key
        crypto.read_table(path, pafs.LocalFileSystem(), wrong, columns=["embedding"])


def test_the_output_keeps_its_setting(enc, tmp_path):
    out = str(tmp_path / "out")
    os.makedirs(out)
    assert crypto.ensure_output(out, None) is None
    assert crypto.ensure_output(out, enc) == enc
    assert json.loads((tmp_path / "out" / crypto.SETTINGS_FILE).read_text())["column_key"] == "bio"
    assert "keys" not in (tmp_path / "out" / crypto.SETTINGS_FILE).read_text().replace("keys.json", "")  # ids, not keys
    assert crypto.ensure_output(out, None) == enc  # later runs follow it
    with pytest.raises(ValueError, match="encrypted with"):
        crypto.ensure_output(out, EncryptionConfig("local", "footer", "other", enc.key_file))
    # keys that cannot be used fail before any work, as one message
    with pytest.raises(ValueError, match="holds no key other"):
        crypto.ensure_output(str(tmp_path / "o2"), EncryptionConfig("local", "footer", "other", enc.key_file))
    with pytest.raises(ValueError, match="cannot read the key file"):
        crypto.ensure_output(
            str(tmp_path / "o3"), EncryptionConfig("local", "footer", "bio", str(tmp_path / "missing.json"))
        )
    plain = tmp_path / "plain"
    (plain / "faces" / "dt=2026-01-01").mkdir(parents=True)
    pq.write_table(_faces(), plain / "faces" / "dt=2026-01-01" / "part-x.parquet")
    with pytest.raises(ValueError, match="plaintext embeddings"):
        crypto.ensure_output(str(plain), enc)


def test_a_key_file_kept_elsewhere_is_named_by_the_machine_that_reads(enc, tmp_path, monkeypatch):
    """The key file's recorded path is where the output's first run found it, not part of the
    setting: a machine that keeps it elsewhere names its copy (FACEPIPE_KEY_FILE for every
    command, --key-file for a run); one that cannot read it gets one line naming the way out,
    from the real CLI, not a traceback."""
    from facepipe.errors import UserError
    from facepipe.storage.output import Output

    out = str(tmp_path / "out")
    os.makedirs(out)
    crypto.ensure_output(out, enc)
    Output(out, enc).write_table(_faces(), f"{out}/faces/dt=2026-01-01/part-r-0.parquet")
    moved = str(tmp_path / "elsewhere.json")
    os.replace(enc.key_file, moved)
    monkeypatch.setattr(crypto, "_known", {})
    crypto._factory.cache_clear()  # as a new process: no keys held from the write
    with pytest.raises(UserError, match=f"cannot read the key file {enc.key_file} .*{crypto.KEY_FILE_ENV}=PATH"):
        Output.open(out).dataset("faces").to_table(columns=["embedding"])
    r = subprocess.run(
        [sys.executable, "-m", "facepipe.cli", "cluster", "--output", out], capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert f"{crypto.KEY_FILE_ENV}=PATH" in r.stderr.strip().splitlines()[-1]

    monkeypatch.setenv(crypto.KEY_FILE_ENV, moved)
    monkeypatch.setattr(crypto, "_known", {})
    got = Output.open(out)
    assert got.encryption.key_file == moved
    x = got.dataset("faces").to_table(columns=["embedding"]).column("embedding").to_pylist()
    assert np.allclose(x, _faces().column("embedding").to_pylist())
    # a run naming its own copy is the same setting; the record keeps the first run's path
    monkeypatch.delenv(crypto.KEY_FILE_ENV)
    monkeypatch.setattr(crypto, "_known", {})
    assert crypto.ensure_output(out, EncryptionConfig("local", "footer", "bio", moved)).key_file == moved
    assert json.loads((tmp_path / "out" / crypto.SETTINGS_FILE).read_text())["key_file"] == enc.key_file
    with pytest.raises(ValueError, match="encrypted with"):
        crypto.ensure_output(out, EncryptionConfig("local", "footer", "other", moved))


@pytest.mark.slow
def test_an_encrypted_output_end_to_end(ray_cluster, photos, tmp_path):
    """The job, clustering, scoring, forget and the report on an encrypted output."""
    from facepipe.run.job import run
    from facepipe.tools.erase import ForgetRequest, forget
    from facepipe.tools.report import render

    keys = _key_file(tmp_path / "keys.json", footer=os.urandom(32), bio=os.urandom(32))
    cfg = EncryptionConfig("local", "footer", "bio", keys)
    arch = archive.build(tmp_path / "archive", photos)
    out = tmp_path / "out"
    m = run(archive.run_config(arch.inputs, out, "enc1", encryption=cfg))
    assert m.cluster["identities"] > 0 and m.score["scored"] == m.counts.faces
    faces = sorted(out.glob("faces/*/*.parquet"))
    idents = sorted(out.glob("identities/*/*.parquet"))
    assert faces and idents
    for f, col in [(f, "embedding") for f in faces] + [(f, "centroid") for f in idents]:
        with pytest.raises(OSError):
            pq.read_table(f, columns=[col])
    n = duckdb.sql(
        f"select count(*) from read_parquet('{out}/faces/*/*.parquet', hive_partitioning=true) where det_score > 0"
    ).fetchall()[0][0]
    assert n == m.counts.faces  # the warehouse still counts and joins on the plain columns
    [(ident, k)] = duckdb.sql(
        f"select identity_id, count(*) from read_parquet('{out}/face_identity/*/*.parquet') where identity_id "
        "is not null "
        "group by 1 order by 2 desc, 1 limit 1"
    ).fetchall()
    forget(str(out), ForgetRequest(identity_ids=(ident,)))
    for f in sorted(out.glob("faces/*/*.parquet")):  # rewritten files are encrypted too
        with pytest.raises(OSError):
            pq.read_table(f, columns=["embedding"])
        assert crypto.read_table(str(f), pafs.LocalFileSystem(), cfg, columns=["embedding"]).num_rows > 0
    page, _ = render(str(out))
    assert 'id="identities"' in page
    # a second night follows the recorded setting without being told
    m2 = run(archive.run_config(arch.inputs, out, "enc2", "2026-11-02", full=True))
    assert m2.config["encryption"] is None and m2.counts.faces > 0
    for f in sorted(out.glob("faces/*/*.parquet")):
        with pytest.raises(OSError):
            pq.read_table(f, columns=["embedding"])
    from facepipe.tools.search import search  # search by face reads the embeddings with the recorded key

    hits = search(str(out), [str(photos["grace_hopper.jpg"])], k=2)
    assert hits and hits[0].distance < 0.1 and hits[0].source_uri.endswith("grace_hopper.jpg")
