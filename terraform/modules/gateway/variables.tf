variable "region_id" {
  description = "The Meridian region these gateways stand in (names and the latency record's set identifier)."
  type        = string
}

variable "public_name" {
  description = "The one global name, e.g. rtc.example.com (the config module's gateway.public_name): a latency record per region, with a health check."
  type        = string
}

variable "ports" {
  description = "The config module's ports output: the only ports this module opens, listens on and health-checks."
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
  description = "The config module's cloud_init.gateway document of this region."
  type        = string
  sensitive   = true
}

variable "vpc_id" {
  description = "The region's VPC (network module)."
  type        = string
}

variable "subnet_ids" {
  description = "The gateway subnets, one per zone (network module's gateway_subnet_ids): the load balancer and the instances."
  type        = list(string)
}

variable "zone_id" {
  description = "Route 53 hosted zone of public_name."
  type        = string
}

variable "nodes" {
  description = "Gateway instances: min and max of the group (stateless, so any count), and the instance type."
  type = object({
    min           = optional(number, 2)
    max           = optional(number, 6)
    instance_type = optional(string, "c6i.large")
  })
  default = {}

  validation {
    condition     = var.nodes.min >= 1 && var.nodes.max >= var.nodes.min
    error_message = "nodes: min >= 1 and max >= min."
  }
}

variable "cpu_target" {
  description = "Target average CPU (percent) of the gateway group's target tracking policy."
  type        = number
  default     = 50
}

variable "monitoring_cidrs" {
  description = "CIDRs of the Prometheus scrapers, admitted to the gateway port (/metrics)."
  type        = list(string)
  default     = []
}

variable "health_check_path" {
  description = "Path the load balancer and Route 53 check: the gateway's /healthz (503 when a part of it died)."
  type        = string
  default     = "/healthz"
}

variable "ssl_policy" {
  description = "TLS policy of the HTTPS listener."
  type        = string
  default     = "ELBSecurityPolicy-TLS13-1-2-2021-06"
}

variable "idle_timeout" {
  description = "Load balancer idle timeout in seconds; signal sockets ping every 5 s, so the default holds them."
  type        = number
  default     = 120
}

variable "ami_id" {
  description = "AMI for the gateways; default the latest Amazon Linux 2023 for architecture."
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

variable "ssh_key_name" {
  description = "EC2 key pair for SSH; default none (SSM Session Manager)."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
