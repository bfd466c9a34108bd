variable "region" {
  description = "AWS region of the buckets, catalog and cluster"
  type        = string
  default     = "us-east-1"
}

variable "name" {
  description = "prefix of every resource name"
  type        = string
  default     = "facepipe"
}

variable "archive_bucket" {
  description = "bucket holding the image archive (read by the job)"
  type        = string
}

variable "output_bucket" {
  description = "bucket the job writes its tables to (--output s3://OUTPUT_BUCKET/OUTPUT_PREFIX)"
  type        = string
}

variable "output_prefix" {
  description = "prefix of the job's output root inside the output bucket, ending in /"
  type        = string
  default     = "faces/"

  validation {
    condition     = can(regex("^([A-Za-z0-9_.-]+/)+$", var.output_prefix))
    error_message = "output_prefix must be a key prefix ending in / (e.g. faces/)."
  }
}

variable "first_dt" {
  description = "first date partition Athena projects (partitions run from it to today)"
  type        = string
  default     = "2024-01-01"
}
