# One region's gateways on AWS: an auto scaling group of stateless gateways
# behind an Application Load Balancer that terminates TLS (ACM), and this
# region's share of the global name: a Route 53 latency record with a health
# check on /healthz, so clients reach the nearest healthy region's gateways.
# The gateway serves plain HTTP to the load balancer (plain_http, trusted
# proxies = the gateway subnets: the config module renders both).

data "aws_region" "current" {}
data "aws_partition" "current" {}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  name = "meridian-${var.region_id}-gw"
  ami  = var.ami_id != null ? var.ami_id : one(data.aws_ssm_parameter.ami[*].insecure_value)
  tags = merge(var.tags, { "meridian:region" = var.region_id })
}

# --- Security groups -----------------------------------------------------------

resource "aws_security_group" "lb" {
  name_prefix = "${local.name}-lb-"
  description = "Meridian gateway load balancer of ${var.region_id}: HTTPS from anywhere"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.name}-lb" })
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "gateway" {
  name_prefix = "${local.name}-"
  description = "Meridian gateways of ${var.region_id}: the gateway port from the load balancer and monitoring"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = local.name })
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "lb_https" {
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS/WSS"
  ip_protocol       = "tcp"
  from_port         = var.ports.gateway_https
  to_port           = var.ports.gateway_https
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_egress_rule" "lb_to_gateways" {
  security_group_id            = aws_security_group.lb.id
  description                  = "to the gateways"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.gateway_listen
  to_port                      = var.ports.gateway_listen
  referenced_security_group_id = aws_security_group.gateway.id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_from_lb" {
  security_group_id            = aws_security_group.gateway.id
  description                  = "API, /rtc and /healthz, from the load balancer"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.gateway_listen
  to_port                      = var.ports.gateway_listen
  referenced_security_group_id = aws_security_group.lb.id
}

resource "aws_vpc_security_group_ingress_rule" "gateway_metrics" {
  for_each          = toset(var.monitoring_cidrs)
  security_group_id = aws_security_group.gateway.id
  description       = "/metrics, from monitoring"
  ip_protocol       = "tcp"
  from_port         = var.ports.gateway_listen
  to_port           = var.ports.gateway_listen
  cidr_ipv4         = each.value
}

# Out: the SFU signal ports of every region, the database, the release download.
resource "aws_vpc_security_group_egress_rule" "gateway_all" {
  security_group_id = aws_security_group.gateway.id
  description       = "everything out"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# --- TLS certificate for the global name, validated in Route 53 ----------------

resource "aws_acm_certificate" "this" {
  domain_name       = var.public_name
  validation_method = "DNS"
  tags              = local.tags
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_route53_record" "validation" {
  for_each = { for o in aws_acm_certificate.this.domain_validation_options : o.domain_name => o }
  zone_id  = var.zone_id
  name     = each.value.resource_record_name
  type     = each.value.resource_record_type
  records  = [each.value.resource_record_value]
  ttl      = 300
  # Every region's certificate for the same name asks for the same record.
  allow_overwrite = true
}

resource "aws_acm_certificate_validation" "this" {
  certificate_arn         = aws_acm_certificate.this.arn
  validation_record_fqdns = [for r in aws_route53_record.validation : r.fqdn]
}

# --- Load balancer ------------------------------------------------------------------

resource "aws_lb" "this" {
  name_prefix        = "mgw-"
  load_balancer_type = "application"
  security_groups    = [aws_security_group.lb.id]
  subnets            = var.subnet_ids
  idle_timeout       = var.idle_timeout
  tags               = merge(local.tags, { Name = local.name })
}

resource "aws_lb_target_group" "gateway" {
  name_prefix          = "mgw-"
  vpc_id               = var.vpc_id
  protocol             = "HTTP"
  port                 = var.ports.gateway_listen
  deregistration_delay = 30
  tags                 = local.tags

  health_check {
    path                = var.health_check_path
    port                = var.ports.gateway_listen
    protocol            = "HTTP"
    matcher             = "200"
    interval            = 10
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }

  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.this.arn
  protocol          = "HTTPS"
  port              = var.ports.gateway_https
  ssl_policy        = var.ssl_policy
  certificate_arn   = aws_acm_certificate_validation.this.certificate_arn

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.gateway.arn
  }
}

# --- Gateway instances ----------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "gateway" {
  name_prefix        = "${local.name}-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

resource "aws_iam_role_policy_attachment" "ssm" {
  role       = aws_iam_role.gateway.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gateway" {
  name_prefix = "${local.name}-"
  role        = aws_iam_role.gateway.name
  tags        = local.tags
}

resource "aws_launch_template" "gateway" {
  name_prefix            = "${local.name}-"
  image_id               = local.ami
  instance_type          = var.nodes.instance_type
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.gateway.id]
  user_data              = base64gzip(var.cloud_init)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.gateway.arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = local.name, "meridian:role" = "${var.region_id}-gateway" })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "gateway" {
  name_prefix               = "${local.name}-"
  min_size                  = var.nodes.min
  max_size                  = var.nodes.max
  vpc_zone_identifier       = var.subnet_ids
  target_group_arns         = [aws_lb_target_group.gateway.arn]
  health_check_type         = "ELB"
  health_check_grace_period = 120
  default_instance_warmup   = 60

  launch_template {
    id      = aws_launch_template.gateway.id
    version = aws_launch_template.gateway.latest_version
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = local.name })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    ignore_changes = [desired_capacity]
  }
}

resource "aws_autoscaling_policy" "gateway_cpu" {
  name                   = "${local.name}-cpu"
  autoscaling_group_name = aws_autoscaling_group.gateway.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.cpu_target
    predefined_metric_specification {
      predefined_metric_type = "ASGAverageCPUUtilization"
    }
  }
}

# --- This region's share of the global name ------------------------------------

resource "aws_route53_health_check" "gateway" {
  fqdn              = aws_lb.this.dns_name
  type              = "HTTPS"
  port              = var.ports.gateway_https
  resource_path     = var.health_check_path
  request_interval  = 30
  failure_threshold = 3
  tags              = merge(local.tags, { Name = "${local.name}-healthz" })
}

resource "aws_route53_record" "latency" {
  zone_id         = var.zone_id
  name            = var.public_name
  type            = "A"
  set_identifier  = var.region_id
  health_check_id = aws_route53_health_check.gateway.id

  latency_routing_policy {
    region = data.aws_region.current.name
  }

  alias {
    name                   = aws_lb.this.dns_name
    zone_id                = aws_lb.this.zone_id
    evaluate_target_health = true
  }
}
