# Two buckets: the archive (read-only to the job) and the output (versioned, so a bad night can
# be rolled back object by object). Both SSE-KMS, both closed to the public.

resource "aws_s3_bucket" "archive" {
  bucket = var.archive_bucket
}

resource "aws_s3_bucket" "output" {
  bucket = var.output_bucket
}

resource "aws_s3_bucket_versioning" "output" {
  bucket = aws_s3_bucket.output.id
  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_server_side_encryption_configuration" "buckets" {
  for_each = { archive = aws_s3_bucket.archive.id, output = aws_s3_bucket.output.id }
  bucket   = each.value
  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = aws_kms_key.facepipe.arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "buckets" {
  for_each                = { archive = aws_s3_bucket.archive.id, output = aws_s3_bucket.output.id }
  bucket                  = each.value
  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_lifecycle_configuration" "output" {
  bucket = aws_s3_bucket.output.id
  # a crashed run's staging files and old object versions are not kept forever
  rule {
    id     = "staging"
    status = "Enabled"
    filter {
      prefix = "${var.output_prefix}_staging/"
    }
    expiration {
      days = 7
    }
  }
  rule {
    id     = "old-versions"
    status = "Enabled"
    filter {}
    noncurrent_version_expiration {
      noncurrent_days = 30
    }
  }
}
