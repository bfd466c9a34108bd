"""The README's first command on ARM: ``make demo`` on arm64 Linux (Debian 12, its Python 3.11),
run under QEMU's user-mode emulation on this x86_64 machine, and its output against this
machine's own demo, table by table.

    sudo .venv/bin/python -m bench.diagnostics.arm_demo [--root /tmp/facepipe-arm64] [--tests]

Root (apt-get, chroot, binfmt_misc). What it does:

1. Installs Debian's ``qemu-user-static``, ``binfmt-support`` and ``debootstrap`` and registers
   the aarch64 interpreter (mounting ``binfmt_misc`` where it is not), then bootstraps a minimal
   arm64 Debian 12 into ``--root`` (with python3, venv, pip, make, git: kept for the next run).
2. Clones this repository's HEAD into it and runs ``make demo`` there with a clean environment:
   the venv, ``pip install torch==2.13.0`` and the package from PyPI as a user on a Graviton node
   would (PyPI's aarch64 torch 2.13.0 is its CUDA build, as on x86_64 for 3.12/3.13), the demo
   photos fetched, the job run. The host's CA bundle is copied in (a machine behind a TLS proxy).
3. Runs the same demo here, in the same folder path (ids derive from ``source_uri``), and
   compares: every table's keys (image, face and identity ids, statuses, outlier flags, the
   identity of each face) must be equal; floats (boxes, landmarks, scores, embeddings) may differ
   by what two CPUs' kernels give -- the largest difference of each column is printed.

Exit 0 when the keys agree and no float column differs by more than ``TOLERANCE``. About 12
minutes here, 9 of them the emulated install and demo (bench/RESULTS.md "The demo on ARM").
``--tests`` then runs ``make test-fast`` there too: most of an hour emulated.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import duckdb
import numpy as np

from bench import record

REPO = Path(__file__).resolve().parents[2]
DEMO = "/tmp/facepipe-demo"  # the same path on both sides: ids derive from source_uri
SUITE = "bookworm"
PACKAGES = "python3,python3-venv,python3-pip,ca-certificates,make,git,libgl1,libglib2.0-0"
#: (table, key columns, float columns): keys must be equal, floats within TOLERANCE
TABLES = {
    "images": ("image_id, source_uri, status, n_faces, width, height", ""),
    "faces": ("face_id, image_id, face_index", "x1, y1, x2, y2, det_score, landmarks, embedding, face_logit"),
    "face_outliers": ("face_id, is_outlier, reason", "outlier_score, drocc_score"),
    "face_identity": ("face_id, identity_id", "distance"),
    "identities": ("identity_id, n_faces, representative_face_id", "centroid"),
}
#: largest difference allowed between the two CPUs: pixels for boxes, units for scores and vectors
TOLERANCE = {"x1": 0.5, "y1": 0.5, "x2": 0.5, "y2": 0.5, "landmarks": 0.5, "det_score": 0.01, "embedding": 0.01,
             "face_logit": 0.1, "outlier_score": 0.1, "drocc_score": 0.1, "distance": 0.01,
             "centroid": 0.01}  # fmt: skip


def sh(*cmd: str, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, **kw)


def debian_mirror() -> str:
    """The Debian archive this machine's apt uses (its sources, deb822 or one-line), for debootstrap."""
    import re

    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        text = f.read_text() if f.is_file() and f.suffix in ("", ".list", ".sources") else ""
        for uri in re.findall(r"^(?:URIs:\s*|deb\s+(?:\[[^]]*\]\s*)?)(\S+)", text, re.M):
            if uri.rstrip("/").endswith("/debian"):
                return uri
    raise SystemExit("arm_demo: no Debian archive in /etc/apt's sources")


def arm64_root(root: Path) -> None:
    """Step 1 (module text)."""
    if not shutil.which("debootstrap") or not Path("/usr/bin/qemu-aarch64-static").exists():
        sh("apt-get", "update", "-qq")
        sh("apt-get", "install", "-y", "-qq", "qemu-user-static", "binfmt-support", "debootstrap")
    if not Path("/proc/sys/fs/binfmt_misc/register").exists():
        sh("mount", "binfmt_misc", "-t", "binfmt_misc", "/proc/sys/fs/binfmt_misc")
    sh("update-binfmts", "--enable", "qemu-aarch64")
    if not (root / "usr/bin/python3").exists():
        sh("debootstrap", "--arch=arm64", "--variant=minbase", f"--include={PACKAGES}", SUITE, str(root),
           debian_mirror())  # fmt: skip
    shutil.copy("/etc/resolv.conf", root / "etc/resolv.conf")
    shutil.copy("/etc/ssl/certs/ca-certificates.crt", root / "etc/ssl/certs/ca-certificates.crt")


#: the emulated CPU: AWS Graviton2's core. QEMU 7.2's default (``max``) lacks instructions that
#: oneDNN's kernels then use (CenterFace's convolutions die of SIGILL)
QEMU_CPU = "neoverse-n1"
#: /proc/cpuinfo as a Graviton2 shows it: QEMU 7.2's user mode passes the host's x86 one through,
#: and torch's cpuinfo crashes parsing it at import (SIGSEGV)
CPUINFO = "".join(
    f"processor\t: {i}\nBogoMIPS\t: 243.75\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
    "asimdhp cpuid asimdrdm lrcpc dcpop asimddp ssbs\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
    "CPU variant\t: 0x3\nCPU part\t: 0xd0c\nCPU revision\t: 1\n\n"
    for i in range(os.cpu_count() or 1)
)


#: a Neoverse N1's main ID register, as sysfs shows it on a Graviton2 (oneDNN reads it at torch's
#: import and prints a line to stderr where it is missing, which a one-line error then is not)
MIDR_EL1 = "0x00000000413fd0c1\n"


def _mount(root: Path) -> list[Path]:
    """/sys (with a Graviton2's CPU list and ID registers), /dev and /proc (with :data:`CPUINFO`
    over its cpuinfo) in the root; what was mounted."""
    mounted = []
    for d in ("sys", "dev", "proc"):
        if subprocess.run(["mountpoint", "-q", str(root / d)]).returncode:
            how = ["-t", "proc", "proc"] if d == "proc" else ["--bind", f"/{d}"]
            sh("mount", *how, str(root / d))
            mounted.append(root / d)
    fake = root / "etc" / "cpuinfo-graviton2"
    fake.write_text(CPUINFO)
    sh("mount", "--bind", str(fake), str(root / "proc" / "cpuinfo"))
    cpus = root / "sys" / "devices" / "system" / "cpu"  # the host's, without the ID register oneDNN reads
    sh("mount", "-t", "tmpfs", "tmpfs", str(cpus))
    n = os.cpu_count() or 1
    for name in ("possible", "present", "online"):
        (cpus / name).write_text(f"0-{n - 1}\n")
    for i in range(n):
        (cpus / f"cpu{i}" / "regs" / "identification").mkdir(parents=True)
        (cpus / f"cpu{i}" / "regs" / "identification" / "midr_el1").write_text(MIDR_EL1)
    return [*mounted, root / "proc" / "cpuinfo", cpus]


def in_arm64(root: Path, script: str) -> tuple[int, float]:
    """``script`` run by bash in the arm64 root with a clean environment: (exit status, seconds)."""
    mounted = _mount(root)
    env = ["PATH=/usr/local/bin:/usr/bin:/bin", "HOME=/root", "LANG=C.UTF-8", f"QEMU_CPU={QEMU_CPU}",
           "PIP_DISABLE_PIP_VERSION_CHECK=1",
           "PIP_CERT=/etc/ssl/certs/ca-certificates.crt", "PIP_DEFAULT_TIMEOUT=180"]  # fmt: skip
    t = time.monotonic()
    try:
        cmd = ["chroot", str(root), "/usr/bin/env", "-i", *env, "/bin/bash", "-euo", "pipefail", "-c", script]
        rc = subprocess.run(cmd).returncode
    finally:
        for m in reversed(mounted):
            subprocess.run(["umount", "-l", str(m)])
    return rc, time.monotonic() - t


def compare(a: Path, b: Path) -> bool:
    """Step 3's comparison of two outputs (module text); prints a line per table."""
    ok = True
    for table, (keys, floats) in TABLES.items():
        cols = f"{keys}, {floats}" if floats else keys
        q = f"select {cols} from read_parquet('{{}}/{table}/*/*.parquet') order by {keys}"
        x, y = (duckdb.sql(q.format(o)).fetchall() for o in (a, b))
        nk = len(keys.split(","))
        same = [r[:nk] for r in x] == [r[:nk] for r in y]
        worst = {}
        for i, col in enumerate(c.strip() for c in floats.split(",") if c.strip()):
            u = [np.ravel(np.asarray(r[nk + i], np.float64)) for r in x]
            v = [np.ravel(np.asarray(r[nk + i], np.float64)) for r in y]
            worst[col] = max((float(np.max(np.abs(s - t), initial=0.0)) for s, t in zip(u, v)), default=0.0)
        within = all(worst[c] <= TOLERANCE[c] for c in worst)
        ok &= same and within
        diffs = ", ".join(f"{c} {w:.2g}" for c, w in worst.items())
        print(f"{table:14s} rows {len(x):3d} / {len(y):3d}  keys equal: {same}  largest differences: {diffs or '-'}")
        record.numbers(**{table: {"rows": [len(x), len(y)], "keys_equal": same, "largest": worst}})
    return ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--root", type=Path, default=Path("/tmp/facepipe-arm64"), help="the arm64 Debian (kept)")
    ap.add_argument("--tests", action="store_true", help="then also `make test-fast` there (most of an hour)")
    a = ap.parse_args()
    if os.geteuid():
        raise SystemExit("arm_demo: needs root (apt-get, chroot, binfmt_misc)")
    arm64_root(a.root)
    shutil.rmtree(a.root / "src", ignore_errors=True)
    shutil.rmtree(a.root / DEMO.lstrip("/"), ignore_errors=True)
    sh("git", "clone", "-q", str(REPO), str(a.root / "src"))
    rc, seconds = in_arm64(a.root, f"uname -m; cd /src && make demo DEMO_DIR={DEMO}")
    print(f"arm64: make demo (install and run, emulated) exit {rc} after {seconds / 60:.1f} min")
    record.numbers(demo_minutes=seconds / 60, demo_exit=rc)
    if rc:
        return 1
    shutil.rmtree(DEMO, ignore_errors=True)
    sh(sys.executable, "-m", "facepipe.cli", "demo", "--workdir", DEMO, cwd=REPO, stdout=subprocess.DEVNULL)
    ok = compare(a.root / DEMO.lstrip("/") / "output", Path(DEMO) / "output")
    print("SAME OUTPUT (within the tolerances)" if ok else "DIFFERENT")
    record.numbers(same=ok)
    if a.tests:
        rc, seconds = in_arm64(a.root, "cd /src && make test-fast")
        print(f"arm64: make test-fast (emulated) exit {rc} after {seconds / 60:.1f} min")
        record.numbers(tests_minutes=seconds / 60, tests_exit=rc)
        ok &= rc == 0
    return 0 if ok else 1


if __name__ == "__main__":
    record.run(main, "bench.diagnostics.arm_demo")
