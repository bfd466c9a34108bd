"""The Dockerfile builds the image the KubeRay manifests run, from Ray's official image at the
package's Ray version, a Python the package supports and the package's torch pin.
No Docker daemon runs here, so the image is not built in the tests: these checks read the files,
and the command the build runs to prove the models load is run here as it is written."""

import re
import subprocess
import sys
from pathlib import Path

import ray
import yaml

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = (REPO / "Dockerfile").read_text()


def _arg(name: str) -> str:
    return re.search(rf"^ARG {name}=(\S+)$", DOCKERFILE, re.M).group(1)


def _pin(package: str) -> str:
    text = (REPO / "pyproject.toml").read_text()
    return re.search(rf'"{re.escape(package)}(?:\[[^\]]*\])?==([^";]+)"', text).group(1)


def test_the_image_is_built_from_rays_official_image_at_the_packages_versions():
    base = _arg("RAY_IMAGE")
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py(\d+)-(gpu|cpu|cu\d+)", base)
    assert m, base
    assert m.group(1) == ray.__version__ == _pin("ray")
    supported = re.findall(r'"Programming Language :: Python :: 3\.(\d+)"', (REPO / "pyproject.toml").read_text())
    assert m.group(2) in {f"3{v}" for v in supported}, (m.group(2), supported)
    assert re.search(r"^FROM \$\{RAY_IMAGE\}$", DOCKERFILE, re.M)
    assert f"torch=={_pin('torch')}" in DOCKERFILE


def test_the_kuberay_manifests_run_that_image_and_its_entrypoint_is_in_it():
    job = yaml.safe_load((REPO / "infra" / "kuberay" / "rayjob.yaml").read_text())
    cluster = job["spec"]["rayClusterSpec"]
    pods = [cluster["headGroupSpec"]] + cluster["workerGroupSpecs"]
    images = {c["image"] for p in pods for c in p["template"]["spec"]["containers"]}
    built = set(re.findall(r"docker build -t (\S+) \.", DOCKERFILE))
    assert len(images) == 1 and images <= built, (images, built)
    entry = re.search(r"python -m (\S+)", job["spec"]["entrypoint"]).group(1)
    assert entry == "facepipe.jobs.nightly", "the entrypoint is a module of the installed package"
    assert (
        re.search(r"^COPY facepipe \./facepipe$", DOCKERFILE, re.M)
        and "RUN pip install --no-cache-dir . " in DOCKERFILE
    )


def test_the_builds_model_check_loads_every_default_model():
    check = re.search(r'python -c "(.*?)"', DOCKERFILE, re.S).group(1).replace("\\\n", "")
    done = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
