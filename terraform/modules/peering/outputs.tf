output "id" {
  description = "The peering connection."
  value       = aws_vpc_peering_connection.this.id
}
