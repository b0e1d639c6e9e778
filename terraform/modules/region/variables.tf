variable "region" {
  description = "The region as the config module's regions output gives it: id, sfu {nodes, max_nodes, size}, turn {nodes, size}, turn_host."
  type = object({
    id = string
    sfu = object({
      nodes     = number
      max_nodes = number
      size      = optional(string)
    })
    turn = object({
      nodes = number
      size  = optional(string)
    })
    turn_host = string
  })
}

variable "ports" {
  description = "The config module's ports output: the only ports this module opens."
  type = object({
    gateway_https  = number
    gateway_listen = number
    sfu_signal     = number
    sfu_metrics    = number
    sfu_udp        = number
    sfu_tcp        = number
    turn           = number
    turn_tls       = number
    turn_metrics   = number
    postgres       = number
  })
}

variable "cloud_init" {
  description = "The config module's cloud_init documents of this region: { sfu = ..., turn = ... }. This module adds the AWS platform hook to them."
  type = object({
    sfu  = string
    turn = string
  })
  sensitive = true
}

variable "platform_hook" {
  description = "The config module's platform_hook output: the hook's path, the env file per role and where the TURN TLS files go."
  type = object({
    path     = string
    env_file = map(string)
    turn_tls = object({ cert = string, key = string })
  })
}

variable "sfu_stop_timeout_seconds" {
  description = "The config module's stop_timeout_seconds.sfu: how long the SFU unit may take to drain and stop. The scale-in lifecycle hook waits longer."
  type        = number
}

variable "vpc_id" {
  description = "The region's VPC (network module)."
  type        = string
}

variable "subnet_ids" {
  description = "Public subnets for the SFU and TURN nodes, one per zone (network module's node_subnet_ids)."
  type        = list(string)
}

variable "gateway_security_group_id" {
  description = "The security group of this region's gateway instances: the only group admitted to the SFU signal port."
  type        = string
}

variable "remote_gateway_cidrs" {
  description = "The gateway subnets of the other regions (over VPC peering), admitted to the SFU signal port: a gateway routes a join to whichever region is nearest the client."
  type        = list(string)
  default     = []
}

variable "monitoring_cidrs" {
  description = "CIDRs of the Prometheus scrapers, admitted to the SFU's and relay's metrics ports."
  type        = list(string)
  default     = []
}

variable "zone_id" {
  description = "Route 53 hosted zone for the relays' name (region.turn_host)."
  type        = string
}

variable "turn_tls_parameters" {
  description = "SSM parameter names (SecureString) of the PEM certificate chain and key for TURN over TLS, valid for region.turn_host (a wildcard for *.<turn_domain> serves every region). Fetched at boot and daily; the relay reloads them on SIGHUP."
  type = object({
    cert = string
    key  = string
  })
}

variable "ami_id" {
  description = "AMI for the nodes; default the latest Amazon Linux 2023 (x86_64), which has curl, systemd and the AWS CLI the hook uses."
  type        = string
  default     = null
}

variable "architecture" {
  description = "CPU architecture of the release binary and the default AMI: x86_64 or arm64."
  type        = string
  default     = "x86_64"

  validation {
    condition     = contains(["x86_64", "arm64"], var.architecture)
    error_message = "architecture: x86_64 or arm64."
  }
}

variable "instance_types" {
  description = "Instance types when the region gives no size: network-optimised ones, since the SFU and the relay are bound by packets per second."
  type = object({
    sfu  = optional(string, "c6in.xlarge")
    turn = optional(string, "c6in.large")
  })
  default = {}
}

variable "scaling" {
  description = <<-EOT
    How the SFU group scales between region.sfu.nodes and max_nodes:
    - metric "cpu": target tracking on the group's average CPU, target in percent (default 60);
    - metric "participants": target tracking on the average of meridian_sfu_participants,
      which each node publishes to CloudWatch (namespace Meridian) every minute; target in
      participants per node (e.g. 60 % of sfu capacity).
    Scale-in drains: see docs/deploy.md.
  EOT
  type = object({
    metric = optional(string, "cpu")
    target = optional(number, 60)
  })
  default = {}

  validation {
    condition     = contains(["cpu", "participants"], var.scaling.metric) && var.scaling.target > 0
    error_message = "scaling: metric \"cpu\" or \"participants\", target > 0."
  }
}

variable "ssh_key_name" {
  description = "EC2 key pair for SSH; default none (use SSM Session Manager, which the instance profile allows)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
