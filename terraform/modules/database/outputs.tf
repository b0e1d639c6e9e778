output "url" {
  description = "The URL for the config module's database_url: postgres://meridian:PASSWORD@ENDPOINT:PORT/meridian."
  value       = "postgres://meridian:${var.password}@${aws_db_instance.this.address}:${aws_db_instance.this.port}/meridian"
  sensitive   = true
}

output "address" {
  description = "The database's host name."
  value       = aws_db_instance.this.address
}

output "security_group_id" {
  description = "The database's security group."
  value       = aws_security_group.db.id
}
