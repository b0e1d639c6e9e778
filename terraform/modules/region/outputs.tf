output "sfu_security_group_id" {
  description = "Security group of the SFU nodes."
  value       = aws_security_group.sfu.id
}

output "turn_security_group_id" {
  description = "Security group of the TURN relays."
  value       = aws_security_group.turn.id
}

output "sfu_autoscaling_group" {
  description = "Name of the SFU auto scaling group."
  value       = aws_autoscaling_group.sfu.name
}

output "sfu_public_ips" {
  description = "The SFU nodes' Elastic IP pool (max_nodes addresses; a node claims one at boot)."
  value       = aws_eip.sfu[*].public_ip
}

output "turn_public_ips" {
  description = "The relays' Elastic IPs, which region.turn_host resolves to."
  value       = aws_eip.turn[*].public_ip
}

output "turn_host" {
  description = "The relays' DNS name."
  value       = aws_route53_record.turn.fqdn
}

output "drain_heartbeat_seconds" {
  description = "How long scale-in holds a terminating SFU node for its drain."
  value       = local.drain_heartbeat
}
