output "vpc_id" {
  description = "The region's VPC."
  value       = aws_vpc.this.id
  # Addresses can be associated only once the internet gateway is attached.
  depends_on = [aws_internet_gateway.this, aws_route.internet]
}

output "cidr" {
  description = "The VPC's CIDR."
  value       = aws_vpc.this.cidr_block
}

output "node_subnet_ids" {
  description = "Public subnets of the SFU and TURN nodes, one per zone."
  value       = [for k, s in local.subnets : aws_subnet.this[k].id if s.tier == "nodes"]
  depends_on  = [aws_internet_gateway.this, aws_route_table_association.this, aws_route.internet]
}

output "node_cidrs" {
  description = "CIDRs of the node subnets (the relay's allow_peers, the database's clients)."
  value       = [for k, s in local.subnets : s.cidr if s.tier == "nodes"]
}

output "gateway_subnet_ids" {
  description = "Public subnets of the gateways and their load balancer, one per zone."
  value       = [for k, s in local.subnets : aws_subnet.this[k].id if s.tier == "gateways"]
  depends_on  = [aws_internet_gateway.this, aws_route_table_association.this, aws_route.internet]
}

output "gateway_cidrs" {
  description = "CIDRs of the gateway subnets: what other regions' SFU nodes admit on the signal port, and the gateways' trusted proxies."
  value       = [for k, s in local.subnets : s.cidr if s.tier == "gateways"]
}

output "database_subnet_ids" {
  description = "Private subnets for the database, one per zone."
  value       = [for k, s in local.subnets : aws_subnet.this[k].id if s.tier == "database"]
}

output "route_table_ids" {
  description = "Every route table of the VPC, for peering routes."
  value       = [aws_route_table.public.id, aws_route_table.private.id]
}
