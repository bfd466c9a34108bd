# facepipe's cloud resources on AWS: the archive and output buckets, the Glue catalog and Athena
# workgroup that query the output, and the IAM role the Ray nodes assume.
#
#   terraform init && terraform apply -var archive_bucket=my-archive -var output_bucket=my-faces
#
# Glue table columns come from the code's pyarrow schemas (tables.json, regenerated with
# `python -m facepipe.tools.warehouse > infra/terraform/tables.json`; a test fails when they differ).

terraform {
  required_version = ">= 1.5"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}

provider "aws" {
  region = var.region
}

locals {
  tables        = jsondecode(file("${path.module}/tables.json"))
  output_root   = "s3://${aws_s3_bucket.output.bucket}/${var.output_prefix}"
  athena_result = "s3://${aws_s3_bucket.output.bucket}/_athena/"
}

# --- encryption ------------------------------------------------------------------------------

resource "aws_kms_key" "facepipe" {
  description             = "facepipe: archive images and face embeddings (biometric data) at rest"
  deletion_window_in_days = 30
  enable_key_rotation     = true
}

resource "aws_kms_alias" "facepipe" {
  name          = "alias/${var.name}"
  target_key_id = aws_kms_key.facepipe.key_id
}
