# The role every Ray node assumes (ray_cluster.yaml's IamInstanceProfile): read the archive,
# read and write the output, use the key -- nothing else.

data "aws_iam_policy_document" "assume_ec2" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "ray_node" {
  name               = "${var.name}-ray-node"
  assume_role_policy = data.aws_iam_policy_document.assume_ec2.json
}

data "aws_iam_policy_document" "ray_node" {
  statement {
    sid       = "ReadArchive"
    actions   = ["s3:GetObject"]
    resources = ["${aws_s3_bucket.archive.arn}/*"]
  }
  statement {
    sid       = "ListArchive"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.archive.arn]
  }
  statement {
    sid       = "ReadWriteOutput"
    actions   = ["s3:GetObject", "s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"]
    resources = ["${aws_s3_bucket.output.arn}/${var.output_prefix}*"]
  }
  statement {
    sid       = "ListOutput"
    actions   = ["s3:ListBucket"]
    resources = [aws_s3_bucket.output.arn]
    condition {
      test     = "StringLike"
      variable = "s3:prefix"
      values   = ["${var.output_prefix}*"]
    }
  }
  statement {
    sid       = "UseKey"
    actions   = ["kms:Decrypt", "kms:GenerateDataKey", "kms:Encrypt"] # Encrypt: Parquet column keys (--kms aws)
    resources = [aws_kms_key.facepipe.arn]
  }
}

resource "aws_iam_role_policy" "ray_node" {
  name   = "${var.name}-ray-node"
  role   = aws_iam_role.ray_node.id
  policy = data.aws_iam_policy_document.ray_node.json
}

resource "aws_iam_instance_profile" "ray_node" {
  name = "${var.name}-ray-node"
  role = aws_iam_role.ray_node.name
}
