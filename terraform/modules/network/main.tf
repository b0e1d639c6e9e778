# One region's VPC: public subnets for the media nodes (SFU and TURN, each with
# a public address), public subnets for the gateways and their load balancer
# (their own CIDRs, so other regions' SFU nodes can admit exactly them), and
# private subnets for the database. No NAT gateway: every instance that needs
# the internet has a public address.

data "aws_availability_zones" "up" {
  state = "available"
}

locals {
  azs = slice(data.aws_availability_zones.up.names, 0, var.az_count)
  # /20s: nodes at 0-2, gateways at 4-6, database at 8-10.
  subnets = merge(
    { for i, az in local.azs : "nodes-${az}" => { tier = "nodes", az = az, cidr = cidrsubnet(var.cidr, 4, i), public = true } },
    { for i, az in local.azs : "gateways-${az}" => { tier = "gateways", az = az, cidr = cidrsubnet(var.cidr, 4, 4 + i), public = true } },
    { for i, az in local.azs : "database-${az}" => { tier = "database", az = az, cidr = cidrsubnet(var.cidr, 4, 8 + i), public = false } },
  )
}

resource "aws_vpc" "this" {
  cidr_block           = var.cidr
  enable_dns_support   = true
  enable_dns_hostnames = true
  tags                 = merge(var.tags, { Name = var.name })
}

resource "aws_internet_gateway" "this" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = var.name })
}

resource "aws_subnet" "this" {
  for_each                = local.subnets
  vpc_id                  = aws_vpc.this.id
  availability_zone       = each.value.az
  cidr_block              = each.value.cidr
  map_public_ip_on_launch = each.value.public
  tags                    = merge(var.tags, { Name = "${var.name}-${each.key}", "meridian:tier" = each.value.tier })
}

resource "aws_route_table" "public" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-public" })
}

resource "aws_route" "internet" {
  route_table_id         = aws_route_table.public.id
  destination_cidr_block = "0.0.0.0/0"
  gateway_id             = aws_internet_gateway.this.id
}

resource "aws_route_table" "private" {
  vpc_id = aws_vpc.this.id
  tags   = merge(var.tags, { Name = "${var.name}-private" })
}

resource "aws_route_table_association" "this" {
  for_each       = local.subnets
  subnet_id      = aws_subnet.this[each.key].id
  route_table_id = each.value.public ? aws_route_table.public.id : aws_route_table.private.id
}
