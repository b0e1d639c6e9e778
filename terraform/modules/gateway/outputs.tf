output "security_group_id" {
  description = "Security group of the gateway instances: the region module admits it to the SFU signal port."
  value       = aws_security_group.gateway.id
}

output "load_balancer_dns_name" {
  description = "The load balancer's own name (what the latency record aliases)."
  value       = aws_lb.this.dns_name
}

output "health_check_id" {
  description = "The Route 53 health check on this region's /healthz."
  value       = aws_route53_health_check.gateway.id
}

output "autoscaling_group" {
  description = "Name of the gateway auto scaling group."
  value       = aws_autoscaling_group.gateway.name
}
