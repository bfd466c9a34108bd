"""Biometric data, image bytes and credentials stay out of everything a run prints or records:
the driver's output (Ray forwards its workers' logs to it), the logs Ray keeps on disk for the
run's processes, the run manifest, the summary JSON, the audit record of an erasure and the
one-line storage error. The run reads an S3 archive with real credentials."""

import json
import re
from pathlib import Path

import duckdb
import numpy as np
import pytest
from conftest import S3_ENV

from testbed import archive
from testbed.procs import cli_run

pytestmark = pytest.mark.slow


def _needles(out: Path, arch_root: Path) -> dict[str, list[str]]:
    """What must not appear: embedding values (as Python and numpy print them), image bytes
    (as Python's bytes repr, hex and base64 show them) and the S3 credentials."""
    import base64

    emb = duckdb.sql(f"select embedding from read_parquet('{out}/faces/*/*.parquet') limit 5").fetchall()
    floats = []
    for (e,) in emb:
        for v in e[:16]:
            if abs(v) > 1e-3:
                floats += [
                    repr(float(np.float32(v))),
                    f"{v:.8f}",
                    np.format_float_positional(np.float32(v), precision=8),
                ]
    images = []
    for p in sorted(arch_root.rglob("*.jpg"))[:3] + sorted(arch_root.rglob("*.png"))[:3]:
        chunk = p.read_bytes()[256:280]  # content, past any header
        if len(chunk) == 24:
            images += [chunk.hex(), base64.b64encode(chunk).decode(), repr(chunk)[2:-1]]
    return {
        "embedding values": [f for f in floats if len(f) >= 8],
        "image bytes": images,
        "credentials": [S3_ENV["AWS_SECRET_ACCESS_KEY"], S3_ENV["AWS_ACCESS_KEY_ID"]],
    }


def _leaks(texts: dict[str, str], needles: dict[str, list[str]]) -> list[str]:
    return [
        f"{what} in {where}: {n!r}"
        for where, text in texts.items()
        for what, ns in needles.items()
        for n in ns
        if n in text
    ]


def test_no_embedding_image_bytes_or_credentials_in_logs_and_records(seaweedfs, ray_cluster, photos, tmp_path):
    c = seaweedfs.client
    c.create_bucket(Bucket="leaks")
    root = tmp_path / "archive"
    arch = archive.build(root, photos, prefix="s3://leaks/a")
    archive.upload(c, "leaks", root, "a")
    out = tmp_path / "out"
    p = cli_run(
        ray_cluster,
        arch.inputs,
        out,
        "leak1",
        "2026-11-09",
        "--image-column",
        "image",
        "--id-column",
        "key",
        "--summary-json",
        "-",
        "--report",
    )
    log, _ = p.communicate(timeout=600)
    assert p.returncode == 0, log[-3000:]
    from facepipe.cli import main

    assert (
        main(
            [
                "forget",
                "--output",
                str(out),
                "--image-id",
                duckdb.sql(
                    f"select image_id from read_parquet('{out}/images/*/*.parquet') where status = 'ok' order "
                    "by 1 limit 1"
                ).fetchall()[0][0],
                "--request-id",
                "leak-req",
            ]
        )
        == 0
    )
    texts = {
        "driver output": log,
        "manifest": (out / "_runs" / "leak1.json").read_text(),
        "audit record": (out / "_audit" / "leak-req.json").read_text(),
    }
    # the logs Ray keeps for this run's workers and driver: the test cluster's own session folder
    logs = ray_cluster.temp_dir / "session_latest" / "logs"
    files = [f for f in sorted(logs.rglob("*")) if f.is_file()]
    assert any(f.name.startswith("worker-") for f in files), (
        f"no worker logs under {logs}: the check would read nothing"
    )
    for f in files:
        texts[f"ray log {f.relative_to(logs)}"] = f.read_text(errors="replace")
    needles = _needles(out, root)
    assert all(needles.values()), needles
    assert _leaks(texts, needles) == []
    # a failure's one line names the object, not its bytes or the keys
    seaweedfs.stop()
    try:
        p = cli_run(
            ray_cluster,
            arch.inputs,
            out,
            "leak2",
            "2026-11-10",
            "--image-column",
            "image",
            "--id-column",
            "key",
            "--summary-json",
            "-",
            env={"FACEPIPE_S3_RETRIES": "2"},
        )
        log, _ = p.communicate(timeout=600)
    finally:
        seaweedfs.start()
    assert p.returncode == 3 and re.search(r"storage error: .*s3://leaks/a", log), log[-2000:]
    assert _leaks({"storage error": log}, needles) == []
    assert json.loads(log.strip().splitlines()[-1])["status"] == "failed"
