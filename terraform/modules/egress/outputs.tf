output "autoscaling_group" {
  description = "Name of the egress workers' scaling group: null until the role exists."
  value       = null
}

output "security_group_id" {
  description = "Security group of the egress workers: null until the role exists."
  value       = null
}
