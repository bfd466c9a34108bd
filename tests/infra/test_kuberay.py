"""infra/kuberay: the RayJob runs the extract job for one date with the date as run id, pins the
Ray version the package uses, and has GPU and CPU worker groups; the CronJob never overlaps."""

from pathlib import Path

import ray
import yaml

KUBERAY = Path(__file__).resolve().parents[2] / "infra" / "kuberay"


def test_rayjob_manifest():
    job = yaml.safe_load((KUBERAY / "rayjob.yaml").read_text())
    assert job["apiVersion"] == "ray.io/v1" and job["kind"] == "RayJob"
    spec = job["spec"]
    assert "-m facepipe.jobs.nightly" in spec["entrypoint"] and "--dt DT" in spec["entrypoint"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert spec["rayClusterSpec"]["rayVersion"] == ray.__version__
    groups = {g["groupName"]: g for g in spec["rayClusterSpec"]["workerGroupSpecs"]}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert gpu["nvidia.com/gpu"] == "1"
    for g in groups.values():
        assert g["minReplicas"] <= g["replicas"] <= g["maxReplicas"]


def test_cronjob_never_runs_two_nights_at_once():
    cron = yaml.safe_load((KUBERAY / "cronjob.yaml").read_text())
    assert cron["kind"] == "CronJob" and cron["spec"]["concurrencyPolicy"] == "Forbid"
    assert cron["spec"]["schedule"] == "0 2 * * *"
