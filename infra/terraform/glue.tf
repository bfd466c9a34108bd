# One Glue table per output table, columns from the code's schemas (tables.json). Partitions are
# projected (no crawler, no MSCK REPAIR): dt is a date from first_dt to today, and each partition
# lives at OUTPUT/TABLE/dt=YYYY-MM-DD/.

resource "aws_glue_catalog_database" "facepipe" {
  name        = replace(var.name, "-", "_")
  description = "facepipe output: images, faces, identities, outliers"
}

resource "aws_glue_catalog_table" "tables" {
  for_each      = local.tables
  name          = each.key
  database_name = aws_glue_catalog_database.facepipe.name
  table_type    = "EXTERNAL_TABLE"

  parameters = {
    classification                = "parquet"
    EXTERNAL                      = "TRUE"
    "parquet.compression"         = "ZSTD"
    "projection.enabled"          = "true"
    "projection.dt.type"          = "date"
    "projection.dt.format"        = "yyyy-MM-dd"
    "projection.dt.range"         = "${var.first_dt},NOW"
    "projection.dt.interval"      = "1"
    "projection.dt.interval.unit" = "DAYS"
    "storage.location.template"   = "${local.output_root}${each.key}/dt=$${dt}/"
  }

  partition_keys {
    name = "dt"
    type = "string"
  }

  storage_descriptor {
    location      = "${local.output_root}${each.key}/"
    input_format  = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat"
    output_format = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat"

    ser_de_info {
      serialization_library = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe"
    }

    dynamic "columns" {
      for_each = each.value
      content {
        name = columns.value.name
        type = columns.value.type
      }
    }
  }
}

resource "aws_athena_workgroup" "facepipe" {
  name = var.name
  configuration {
    enforce_workgroup_configuration    = true
    publish_cloudwatch_metrics_enabled = true
    result_configuration {
      output_location = local.athena_result
      encryption_configuration {
        encryption_option = "SSE_KMS"
        kms_key_arn       = aws_kms_key.facepipe.arn
      }
    }
  }
}
