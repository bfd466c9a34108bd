"""A multi-node Ray cluster on this machine: Ray's own multi-node test cluster
(``ray.cluster_utils.Cluster``: a head and worker nodes, each a raylet with its own object store,
resources and workers), run by a process of its own.

    python tests/multinode.py TEMP_DIR NODES_JSON

NODES_JSON: a list of nodes, the head first, e.g. ``[{"name": "head", "num_cpus": 1}, {"name":
"a", "num_cpus": 1, "resources": {"model_slot": 2}}]``. When every node is up it prints one JSON
line -- ``{"address": GCS address, "nodes": {name: node id}}`` -- and then reads commands, one per
line, on stdin:

- ``remove NAME``: the node's processes are killed at once (no graceful stop), as when a machine
  is lost; answers ``removed NAME``;
- ``add NAME NODE_JSON``: a node joins (as an autoscaler's replacement would); answers
  ``added NAME NODE_ID`` once it is up;
- ``quit`` (or stdin closed): every node stopped, then exit.

In a process of its own so that the test process stays connected to the session's one-node
cluster, and so that a test ends this cluster by ending this process's session (testbed/procs.py),
whatever state the test left it in. Its ports are picked free by the caller (environment
variables ``FP_GCS_PORT``, ``FP_DASHBOARD_PORT``, ``FP_AGENT_PORT``); every other port is left to
the OS.
"""

from __future__ import annotations

import json
import os
import sys


def main(temp_dir: str, nodes: list[dict]) -> None:
    from ray.cluster_utils import Cluster

    head, *workers = nodes
    common = {"temp_dir": temp_dir, "object_store_memory": 256 << 20}
    cluster = Cluster(
        initialize_head=True,
        head_node_args={
            **common,
            "num_cpus": head.get("num_cpus", 1),
            "resources": head.get("resources", {}),
            "gcs_server_port": int(os.environ["FP_GCS_PORT"]),
            "include_dashboard": True,  # the state API (testbed/procs.py) asks the dashboard
            "dashboard_host": "127.0.0.1",
            "dashboard_port": int(os.environ["FP_DASHBOARD_PORT"]),
            "dashboard_agent_listen_port": int(os.environ["FP_AGENT_PORT"]),
        },
    )
    ids = {head["name"]: cluster.head_node.node_id}
    by_name = {}

    def add(w: dict) -> str:
        node = cluster.add_node(**common, num_cpus=w.get("num_cpus", 1), resources=w.get("resources", {}))
        by_name[w["name"]] = node
        return node.node_id

    for w in workers:
        ids[w["name"]] = add(w)
    cluster.wait_for_nodes()
    print(json.dumps({"address": cluster.address, "nodes": ids}), flush=True)
    try:
        for line in sys.stdin:
            cmd, *args = line.split()
            if cmd == "remove":
                cluster.remove_node(by_name.pop(args[0]), allow_graceful=False)
                print(f"removed {args[0]}", flush=True)
            elif cmd == "add":
                node_id = add({"name": args[0], **json.loads(" ".join(args[1:]))})
                cluster.wait_for_nodes()
                print(f"added {args[0]} {node_id}", flush=True)
            elif cmd == "quit":
                break
    finally:
        cluster.shutdown()


if __name__ == "__main__":
    main(sys.argv[1], json.loads(sys.argv[2]))
