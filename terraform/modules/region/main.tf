# One region's media tier on AWS: the SFU nodes in an auto scaling group (each
# claims an Elastic IP from the region's pool at boot; scale-in drains through
# a lifecycle hook) and the TURN relays as instances with an Elastic IP each
# (stateful: scaled by count, not by load). Everything a node runs comes from
# the config module's cloud-init; this module adds only the AWS platform hook.

data "aws_region" "current" {}
data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}

data "aws_ssm_parameter" "ami" {
  count = var.ami_id == null ? 1 : 0
  name  = "/aws/service/ami-amazon-linux-latest/al2023-ami-kernel-default-${var.architecture}"
}

locals {
  id       = var.region.id
  name     = "meridian-${var.region.id}"
  ami      = var.ami_id != null ? var.ami_id : one(data.aws_ssm_parameter.ami[*].insecure_value)
  sfu_type = coalesce(var.region.sfu.size, var.instance_types.sfu)
  turn_typ = coalesce(var.region.turn.size, var.instance_types.turn)

  # Fixed names: the nodes' hook needs them before the group exists.
  sfu_asg_name = "${local.name}-sfu"
  drain_hook   = "meridian-drain"
  eip_pool     = "${local.name}-sfu"
  # The ASG holds a terminating node this long: the unit's stop timeout (drain
  # plus shutdown) and a margin for the hook's own calls.
  drain_heartbeat = var.sfu_stop_timeout_seconds + 60

  tags = merge(var.tags, { "meridian:region" = local.id })
}

# --- Security groups: exactly the config module's ports -----------------------

resource "aws_security_group" "sfu" {
  name_prefix = "${local.name}-sfu-"
  description = "Meridian SFU nodes of ${local.id}: ICE media from anywhere, signal from gateways, metrics from monitoring"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.name}-sfu" })
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_security_group" "turn" {
  name_prefix = "${local.name}-turn-"
  description = "Meridian TURN relays of ${local.id}: TURN UDP/TCP/TLS from anywhere, metrics from monitoring"
  vpc_id      = var.vpc_id
  tags        = merge(local.tags, { Name = "${local.name}-turn" })
  lifecycle {
    create_before_destroy = true
  }
}

resource "aws_vpc_security_group_ingress_rule" "sfu_udp" {
  security_group_id = aws_security_group.sfu.id
  description       = "ICE/RTP media of every peer connection, one port for all"
  ip_protocol       = "udp"
  from_port         = var.ports.sfu_udp
  to_port           = var.ports.sfu_udp
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "sfu_tcp" {
  security_group_id = aws_security_group.sfu.id
  description       = "ICE over TCP of every peer connection, one port for all"
  ip_protocol       = "tcp"
  from_port         = var.ports.sfu_tcp
  to_port           = var.ports.sfu_tcp
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "sfu_signal_from_gateways" {
  security_group_id            = aws_security_group.sfu.id
  description                  = "signal, from this region's gateways"
  ip_protocol                  = "tcp"
  from_port                    = var.ports.sfu_signal
  to_port                      = var.ports.sfu_signal
  referenced_security_group_id = var.gateway_security_group_id
}

resource "aws_vpc_security_group_ingress_rule" "sfu_signal_from_remote_gateways" {
  for_each          = toset(var.remote_gateway_cidrs)
  security_group_id = aws_security_group.sfu.id
  description       = "signal, from another region's gateway subnet"
  ip_protocol       = "tcp"
  from_port         = var.ports.sfu_signal
  to_port           = var.ports.sfu_signal
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "sfu_metrics" {
  for_each          = toset(var.monitoring_cidrs)
  security_group_id = aws_security_group.sfu.id
  description       = "/metrics and /healthz, from monitoring"
  ip_protocol       = "tcp"
  from_port         = var.ports.sfu_metrics
  to_port           = var.ports.sfu_metrics
  cidr_ipv4         = each.value
}

resource "aws_vpc_security_group_ingress_rule" "turn_udp" {
  security_group_id = aws_security_group.turn.id
  description       = "TURN over UDP"
  ip_protocol       = "udp"
  from_port         = var.ports.turn
  to_port           = var.ports.turn
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "turn_tcp" {
  security_group_id = aws_security_group.turn.id
  description       = "TURN over TCP"
  ip_protocol       = "tcp"
  from_port         = var.ports.turn
  to_port           = var.ports.turn
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "turn_tls" {
  security_group_id = aws_security_group.turn.id
  description       = "TURN over TLS"
  ip_protocol       = "tcp"
  from_port         = var.ports.turn_tls
  to_port           = var.ports.turn_tls
  cidr_ipv4         = "0.0.0.0/0"
}

resource "aws_vpc_security_group_ingress_rule" "turn_metrics" {
  for_each          = toset(var.monitoring_cidrs)
  security_group_id = aws_security_group.turn.id
  description       = "/metrics and /healthz, from monitoring"
  ip_protocol       = "tcp"
  from_port         = var.ports.turn_metrics
  to_port           = var.ports.turn_metrics
  cidr_ipv4         = each.value
}

# Nodes talk out freely: the release download, the database, the relay's
# peers (any client address), AWS APIs.
resource "aws_vpc_security_group_egress_rule" "all" {
  for_each          = { sfu = aws_security_group.sfu.id, turn = aws_security_group.turn.id }
  security_group_id = each.value
  description       = "everything out"
  ip_protocol       = "-1"
  cidr_ipv4         = "0.0.0.0/0"
}

# --- Instance profiles ----------------------------------------------------------

data "aws_iam_policy_document" "assume" {
  statement {
    actions = ["sts:AssumeRole"]
    principals {
      type        = "Service"
      identifiers = ["ec2.amazonaws.com"]
    }
  }
}

resource "aws_iam_role" "node" {
  for_each           = toset(["sfu", "turn"])
  name_prefix        = "${local.name}-${each.key}-"
  assume_role_policy = data.aws_iam_policy_document.assume.json
  tags               = local.tags
}

# Shell access through SSM Session Manager instead of an SSH port.
resource "aws_iam_role_policy_attachment" "ssm" {
  for_each   = aws_iam_role.node
  role       = each.value.name
  policy_arn = "arn:${data.aws_partition.current.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

data "aws_iam_policy_document" "sfu" {
  statement {
    sid       = "FindPoolAddress"
    actions   = ["ec2:DescribeAddresses"]
    resources = ["*"]
  }
  statement {
    sid       = "ClaimPoolAddress"
    actions   = ["ec2:AssociateAddress"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:elastic-ip/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/meridian:pool"
      values   = [local.eip_pool]
    }
  }
  statement {
    sid       = "ClaimPoolAddressForSelf"
    actions   = ["ec2:AssociateAddress"]
    resources = ["arn:${data.aws_partition.current.partition}:ec2:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:instance/*"]
    condition {
      test     = "StringEquals"
      variable = "ec2:ResourceTag/meridian:role"
      values   = ["${local.id}-sfu"]
    }
  }
  statement {
    sid       = "DrainOnScaleIn"
    actions   = ["autoscaling:CompleteLifecycleAction"]
    resources = ["arn:${data.aws_partition.current.partition}:autoscaling:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:autoScalingGroup:*:autoScalingGroupName/${local.sfu_asg_name}"]
  }
  statement {
    sid       = "PublishParticipants"
    actions   = ["cloudwatch:PutMetricData"]
    resources = ["*"]
    condition {
      test     = "StringEquals"
      variable = "cloudwatch:namespace"
      values   = ["Meridian"]
    }
  }
}

data "aws_iam_policy_document" "turn" {
  statement {
    sid     = "ReadTlsFiles"
    actions = ["ssm:GetParameter"]
    resources = [for p in [var.turn_tls_parameters.cert, var.turn_tls_parameters.key] :
    "arn:${data.aws_partition.current.partition}:ssm:${data.aws_region.current.name}:${data.aws_caller_identity.current.account_id}:parameter/${trimprefix(p, "/")}"]
  }
}

resource "aws_iam_role_policy" "node" {
  for_each = { sfu = data.aws_iam_policy_document.sfu.json, turn = data.aws_iam_policy_document.turn.json }
  name     = "meridian-${each.key}"
  role     = aws_iam_role.node[each.key].id
  policy   = each.value
}

resource "aws_iam_instance_profile" "node" {
  for_each    = aws_iam_role.node
  name_prefix = "${local.name}-${each.key}-"
  role        = each.value.name
  tags        = local.tags
}

# --- User data: the config module's cloud-init plus the AWS platform hook ----------

locals {
  base = { for role in ["sfu", "turn"] : role => yamldecode(var.cloud_init[role]) }

  imds = file("${path.module}/templates/imds.sh")

  platform_files = {
    sfu = concat(
      [
        {
          path        = var.platform_hook.path
          permissions = "0755"
          owner       = "root:root"
          content = templatefile("${path.module}/templates/platform-boot-sfu.sh.tftpl", {
            imds         = local.imds
            region_id    = local.id
            pool         = local.eip_pool
            env_file     = var.platform_hook.env_file.sfu
            signal_port  = var.ports.sfu_signal
            participants = var.scaling.metric == "participants"
          })
        },
        {
          path        = "/usr/local/lib/meridian/drain-watch"
          permissions = "0755"
          owner       = "root:root"
          content = templatefile("${path.module}/templates/drain-watch.sh.tftpl", {
            imds = local.imds, asg = local.sfu_asg_name, hook = local.drain_hook
          })
        },
        {
          path        = "/etc/systemd/system/meridian-drain-watch.service"
          permissions = "0644"
          owner       = "root:root"
          content     = file("${path.module}/templates/meridian-drain-watch.service")
        },
      ],
      var.scaling.metric != "participants" ? [] : [
        {
          path        = "/usr/local/lib/meridian/publish-participants"
          permissions = "0755"
          owner       = "root:root"
          content = templatefile("${path.module}/templates/publish-participants.sh.tftpl", {
            imds = local.imds, asg = local.sfu_asg_name, metrics_port = var.ports.sfu_metrics
          })
        },
        {
          path        = "/etc/systemd/system/meridian-participants.service"
          permissions = "0644"
          owner       = "root:root"
          content     = file("${path.module}/templates/meridian-participants.service")
        },
        {
          path        = "/etc/systemd/system/meridian-participants.timer"
          permissions = "0644"
          owner       = "root:root"
          content     = file("${path.module}/templates/meridian-participants.timer")
        },
      ],
    )
    turn = [
      {
        path        = var.platform_hook.path
        permissions = "0755"
        owner       = "root:root"
        content = templatefile("${path.module}/templates/platform-boot-turn.sh.tftpl", {
          imds        = local.imds
          cert_param  = var.turn_tls_parameters.cert
          key_param   = var.turn_tls_parameters.key
          cert_path   = var.platform_hook.turn_tls.cert
          key_path    = var.platform_hook.turn_tls.key
          env_file    = var.platform_hook.env_file.turn
          hook_path   = var.platform_hook.path
          renew_timer = "meridian-turn-tls.timer"
        })
      },
      {
        path        = "/etc/systemd/system/meridian-turn-tls.service"
        permissions = "0644"
        owner       = "root:root"
        content     = templatefile("${path.module}/templates/meridian-turn-tls.service.tftpl", { hook_path = var.platform_hook.path })
      },
      {
        path        = "/etc/systemd/system/meridian-turn-tls.timer"
        permissions = "0644"
        owner       = "root:root"
        content     = file("${path.module}/templates/meridian-turn-tls.timer")
      },
    ]
  }

  user_data = { for role in ["sfu", "turn"] : role => join("\n", [
    "#cloud-config",
    yamlencode(merge(local.base[role], {
      write_files = concat(local.base[role].write_files, local.platform_files[role])
    })),
  ]) }
}

# --- TURN relays: one Elastic IP each, attached before the instance boots ----

resource "aws_network_interface" "turn" {
  count           = var.region.turn.nodes
  subnet_id       = var.subnet_ids[count.index % length(var.subnet_ids)]
  security_groups = [aws_security_group.turn.id]
  tags            = merge(local.tags, { Name = "${local.name}-turn-${count.index}" })
}

resource "aws_eip" "turn" {
  count             = var.region.turn.nodes
  domain            = "vpc"
  network_interface = aws_network_interface.turn[count.index].id
  tags              = merge(local.tags, { Name = "${local.name}-turn-${count.index}" })
}

resource "aws_instance" "turn" {
  count                       = var.region.turn.nodes
  ami                         = local.ami
  instance_type               = local.turn_typ
  iam_instance_profile        = aws_iam_instance_profile.node["turn"].name
  key_name                    = var.ssh_key_name
  user_data_base64            = base64gzip(local.user_data.turn)
  user_data_replace_on_change = true

  network_interface {
    network_interface_id = aws_network_interface.turn[count.index].id
    device_index         = 0
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tags = merge(local.tags, { Name = "${local.name}-turn-${count.index}", "meridian:role" = "${local.id}-turn" })

  # The relay learns its public address from the Elastic IP, which must be
  # attached when it boots.
  depends_on = [aws_eip.turn]

  lifecycle {
    ignore_changes = [ami]
  }
}

resource "aws_route53_record" "turn" {
  zone_id = var.zone_id
  name    = var.region.turn_host
  type    = "A"
  ttl     = 60
  records = aws_eip.turn[*].public_ip
}

# --- SFU nodes: an auto scaling group over a pool of Elastic IPs -------------

resource "aws_eip" "sfu" {
  count  = var.region.sfu.max_nodes
  domain = "vpc"
  tags   = merge(local.tags, { Name = "${local.name}-sfu-${count.index}", "meridian:pool" = local.eip_pool })
}

resource "aws_launch_template" "sfu" {
  name_prefix            = "${local.name}-sfu-"
  image_id               = local.ami
  instance_type          = local.sfu_type
  key_name               = var.ssh_key_name
  vpc_security_group_ids = [aws_security_group.sfu.id]
  user_data              = base64gzip(local.user_data.sfu)
  update_default_version = true

  iam_instance_profile {
    arn = aws_iam_instance_profile.node["sfu"].arn
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = "required"
    http_put_response_hop_limit = 1
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(local.tags, { Name = "${local.name}-sfu", "meridian:role" = "${local.id}-sfu" })
  }

  tags = local.tags
}

resource "aws_autoscaling_group" "sfu" {
  name                    = local.sfu_asg_name
  min_size                = var.region.sfu.nodes
  max_size                = var.region.sfu.max_nodes
  vpc_zone_identifier     = var.subnet_ids
  health_check_type       = "EC2"
  default_instance_warmup = 120

  launch_template {
    id      = aws_launch_template.sfu.id
    version = aws_launch_template.sfu.latest_version
  }

  # Scale-in and instance refresh hold a terminating node in Terminating:Wait;
  # its drain-watch sees that in the instance metadata, stops the SFU with
  # SIGTERM (the node drains its rooms for up to drain_grace) and completes
  # the action. CONTINUE after the heartbeat if the node cannot.
  initial_lifecycle_hook {
    name                 = local.drain_hook
    lifecycle_transition = "autoscaling:EC2_INSTANCE_TERMINATING"
    heartbeat_timeout    = local.drain_heartbeat
    default_result       = "CONTINUE"
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 90
      instance_warmup        = 120
    }
  }

  dynamic "tag" {
    for_each = merge(local.tags, { Name = "${local.name}-sfu" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }

  lifecycle {
    # The scaling policy owns the desired capacity.
    ignore_changes = [desired_capacity]
  }

  depends_on = [aws_eip.sfu]
}

resource "aws_autoscaling_policy" "sfu" {
  name                   = "${local.name}-sfu-${var.scaling.metric}"
  autoscaling_group_name = aws_autoscaling_group.sfu.name
  policy_type            = "TargetTrackingScaling"

  target_tracking_configuration {
    target_value = var.scaling.target

    dynamic "predefined_metric_specification" {
      for_each = var.scaling.metric == "cpu" ? [1] : []
      content {
        predefined_metric_type = "ASGAverageCPUUtilization"
      }
    }

    dynamic "customized_metric_specification" {
      for_each = var.scaling.metric == "participants" ? [1] : []
      content {
        namespace   = "Meridian"
        metric_name = "participants"
        statistic   = "Average"
        unit        = "Count"
        metric_dimension {
          name  = "AutoScalingGroupName"
          value = local.sfu_asg_name
        }
      }
    }
  }
}
