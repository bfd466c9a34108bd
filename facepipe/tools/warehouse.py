"""The output tables as a warehouse sees them: Glue/Athena (Hive) column types from the pyarrow
schemas in :mod:`facepipe.schema`, so the catalog can never drift from what the job writes.

    python -m facepipe.tools.warehouse > infra/terraform/tables.json

writes the column lists Terraform turns into Glue tables (``infra/terraform/glue.tf``); a test
checks the committed file equals this module's output. Every table is partitioned by ``dt``
(``YYYY-MM-DD`` in the path, ``dt=...``), which Athena projects as a date.
"""

from __future__ import annotations

import json
import sys

import pyarrow as pa

from facepipe import schema

#: Partition column of every table (Hive path ``TABLE/dt=YYYY-MM-DD/``).
PARTITION_KEY = "dt"


_SCALARS = (
    (pa.types.is_string, "string"),
    (pa.types.is_large_string, "string"),
    (pa.types.is_boolean, "boolean"),
    (pa.types.is_int8, "tinyint"),
    (pa.types.is_int16, "smallint"),
    (pa.types.is_int32, "int"),
    (pa.types.is_int64, "bigint"),
    (pa.types.is_float32, "float"),
    (pa.types.is_float64, "double"),
    (pa.types.is_date32, "date"),
    (pa.types.is_timestamp, "timestamp"),
    (pa.types.is_binary, "binary"),
    (pa.types.is_large_binary, "binary"),
)


def hive_type(t: pa.DataType) -> str:
    """A pyarrow type as a Hive/Glue column type (what Athena and Trino read Parquet as)."""
    for test, name in _SCALARS:
        if test(t):
            return name
    if pa.types.is_list(t) or pa.types.is_large_list(t) or pa.types.is_fixed_size_list(t):
        return f"array<{hive_type(t.value_type)}>"
    if pa.types.is_struct(t):
        return "struct<" + ",".join(f"{f.name}:{hive_type(f.type)}" for f in t) + ">"
    raise TypeError(f"no Hive type for {t}")


def glue_columns(s: pa.Schema) -> list[dict[str, str]]:
    return [{"name": f.name, "type": hive_type(f.type)} for f in s if f.name != PARTITION_KEY]


def tables() -> dict[str, list[dict[str, str]]]:
    """Table name -> Glue columns, for every table the job writes."""
    return {name: glue_columns(s) for name, s in schema.TABLES.items()}


def main() -> int:
    json.dump(tables(), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
