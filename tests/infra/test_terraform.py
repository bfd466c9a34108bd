"""Terraform: the Glue tables are the code's schemas; every file parses as HCL and every name it
refers to is declared (python-hcl2, always run); and the whole configuration validates offline
against the real AWS provider (5.100.0, from the machine image's local plugin mirror -- the one
test allowed to skip, in tests/conftest.py's MAY_SKIP_IN_CI, since no registry reachable here
ships Terraform or its provider)."""

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from facepipe import schema
from facepipe.tools import warehouse

TF = Path(__file__).resolve().parents[2] / "infra" / "terraform"


def _plugin_mirror() -> Path | None:
    """FACEPIPE_TF_PLUGINS, or the mirror this project's machines carry."""
    for root in filter(None, [os.environ.get("FACEPIPE_TF_PLUGINS"), "/opt/tf-plugins"]):
        if any(Path(root).glob("registry.terraform.io/hashicorp/aws/*/*/terraform-provider-aws*")):
            return Path(root)
    return None


def test_glue_columns_are_the_schemas_the_job_writes():
    """tables.json (what Terraform builds the Glue tables from) equals `python -m
    facepipe.tools.warehouse`: regenerate it when a schema changes."""
    committed = json.loads((TF / "tables.json").read_text())
    assert committed == warehouse.tables(), (
        "infra/terraform/tables.json is stale: python -m facepipe.tools.warehouse > infra/terraform/tables.json"
    )
    for name, s in schema.TABLES.items():
        assert [c["name"] for c in committed[name]] == [f.name for f in s], name


def test_hive_types_of_the_awkward_columns():
    import pyarrow as pa

    assert warehouse.hive_type(pa.list_(pa.float32(), 128)) == "array<float>"
    assert warehouse.hive_type(pa.list_(pa.string())) == "array<string>"
    assert warehouse.hive_type(pa.date32()) == "date"
    assert warehouse.hive_type(pa.struct([("a", pa.int64()), ("b", pa.binary())])) == "struct<a:bigint,b:binary>"
    with pytest.raises(TypeError):
        warehouse.hive_type(pa.duration("s"))


def _declared() -> tuple[dict, str]:
    """(what the configuration declares by kind, all its text) -- parsed with python-hcl2, which
    fails on any HCL syntax error."""
    import hcl2

    unq = lambda k: k.strip('"')  # noqa: E731 -- hcl2 keeps the quotes of block labels
    names: dict[str, set] = {"variable": set(), "local": set(), "resource": set(), "data": set(), "output": set()}
    text = ""
    for f in sorted(TF.glob("*.tf")):
        text += f.read_text()
        doc = hcl2.loads(f.read_text())
        for block in doc.get("variable", []) + doc.get("output", []):
            kind = "variable" if block in doc.get("variable", []) else "output"
            names[kind] |= {unq(k) for k in block}
        for block in doc.get("locals", []):
            names["local"] |= {k for k in block if not k.startswith("__")}
        for kind in ("resource", "data"):
            for block in doc.get(kind, []):
                for rtype, body in block.items():
                    names[kind] |= {f"{unq(rtype)}.{unq(n)}" for n in body}
    return names, text


def test_configuration_parses_and_every_reference_is_declared():
    """What `terraform validate` checks first, without Terraform: the files parse, and every
    var., local., resource and data reference names something the configuration declares."""
    names, text = _declared()
    code = re.sub(r"#[^\n]*", "", text)  # comments may mention anything
    used = {
        "variable": set(re.findall(r"\bvar\.(\w+)", code)),
        "local": set(re.findall(r"\blocal\.(\w+)", code)),
        "data": {f"{t}.{n}" for t, n in re.findall(r"\bdata\.(aws_\w+)\.(\w+)", code)},
        "resource": {f"{t}.{n}" for t, n in re.findall(r"(?<![\w.\"])(aws_\w+)\.(\w+)", code)},
    }
    for kind, refs in used.items():
        assert refs, f"no {kind} references found: the check would check nothing"
        assert refs <= names[kind], f"undeclared {kind}: {sorted(refs - names[kind])}"
    assert {"archive_bucket", "output_bucket", "region"} <= names["variable"]
    assert names["output"], "no outputs"


@pytest.mark.slow
def test_terraform_validate_offline(tmp_path):
    terraform = shutil.which("terraform")
    mirror = _plugin_mirror()
    if terraform is None or mirror is None:
        pytest.skip(
            "terraform or its AWS provider mirror is not on this machine (set FACEPIPE_TF_PLUGINS to the mirror's root)"
        )
    work = tmp_path / "tf"
    shutil.copytree(TF, work, ignore=shutil.ignore_patterns(".terraform*", "*.tfstate*"))
    env = {**os.environ, "TF_IN_AUTOMATION": "1", "CHECKPOINT_DISABLE": "1"}

    def tf(*args):
        return subprocess.run([terraform, *args], cwd=work, env=env, capture_output=True, text=True, timeout=300)

    init = tf("init", "-backend=false", "-input=false", f"-plugin-dir={mirror}")
    assert init.returncode == 0, init.stdout + init.stderr
    valid = tf("validate", "-json")
    report = json.loads(valid.stdout)
    assert valid.returncode == 0 and report["valid"], report
    fmt = tf("fmt", "-check", "-recursive")
    assert fmt.returncode == 0, f"terraform fmt would change: {fmt.stdout}"


def test_every_table_is_projected_by_date_and_the_role_is_least_privilege():
    glue = (TF / "glue.tf").read_text()
    assert "for_each      = local.tables" in glue and '"projection.dt.type"          = "date"' in glue
    iam = (TF / "iam.tf").read_text()
    # the archive is read-only to the nodes; writes and deletes only under the output prefix
    assert '"s3:PutObject"' not in iam.split("ReadWriteOutput")[0]
    assert "${aws_s3_bucket.output.arn}/${var.output_prefix}*" in iam
