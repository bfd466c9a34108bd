output "job_output_uri" {
  description = "pass to the job as --output"
  value       = local.output_root
}

output "ray_node_instance_profile_arn" {
  description = "ray_cluster.yaml's IamInstanceProfile.Arn"
  value       = aws_iam_instance_profile.ray_node.arn
}

output "glue_database" {
  value = aws_glue_catalog_database.facepipe.name
}

output "athena_workgroup" {
  value = aws_athena_workgroup.facepipe.name
}
