# The managed Postgres every gateway and SFU node shares (rooms, tokens, the
# node registry), in the home region's private subnets, reached from the other
# regions over VPC peering.
#
# Migrations: not run from here. Terraform's machine cannot reach a private
# database, so there is no null_resource. The gateways of the config module's
# migrate_region run `meridian migrate` (meridian-migrate.service, from their
# cloud-init) before they serve; the store migrates under a Postgres advisory
# lock, so the first run applies what is pending and every later one finds
# nothing. Every role also migrates at start, the same way, so no process ever
# runs against an older schema.

resource "aws_db_subnet_group" "this" {
  name_prefix = "${var.name}-"
  subnet_ids  = var.subnet_ids
  tags        = var.tags
}

resource "aws_security_group" "db" {
  name_prefix = "${var.name}-db-"
  description = "Meridian Postgres: from the gateways and SFU nodes only"
  vpc_id      = var.vpc_id
  tags        = merge(var.tags, { Name = "${var.name}-db" })
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "postgres" {
  for_each          = toset(var.client_cidrs)
  security_group_id = aws_security_group.db.id
  description       = "Postgres from gateways and SFU nodes"
  ip_protocol       = "tcp"
  from_port         = var.ports.postgres
  to_port           = var.ports.postgres
  cidr_ipv4         = each.value
}

# The store connects without TLS (tokio-postgres NoTls), so RDS must not
# force it; the traffic stays on private addresses and peering links.
resource "aws_db_parameter_group" "this" {
  name_prefix = "${var.name}-pg${var.engine_version}-"
  family      = "postgres${var.engine_version}"
  tags        = var.tags

  parameter {
    name  = "rds.force_ssl"
    value = "0"
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_db_instance" "this" {
  identifier_prefix      = "${var.name}-"
  engine                 = "postgres"
  engine_version         = var.engine_version
  instance_class         = var.instance_class
  allocated_storage      = var.allocated_storage
  max_allocated_storage  = var.allocated_storage * 4
  storage_type           = "gp3"
  storage_encrypted      = true
  db_name                = "meridian"
  username               = "meridian"
  password               = var.password
  port                   = var.ports.postgres
  db_subnet_group_name   = aws_db_subnet_group.this.name
  vpc_security_group_ids = [aws_security_group.db.id]
  parameter_group_name   = aws_db_parameter_group.this.name
  multi_az               = var.multi_az
  publicly_accessible    = false

  backup_retention_period    = var.backup_retention_days
  deletion_protection        = var.deletion_protection
  skip_final_snapshot        = false
  final_snapshot_identifier  = "${var.name}-final"
  auto_minor_version_upgrade = true
  apply_immediately          = false

  tags = var.tags
}
