variable "name" {
  description = "Name of the database instance and its resources, e.g. meridian."
  type        = string
  default     = "meridian"
}

variable "ports" {
  description = "The config module's ports output: the database listens on ports.postgres."
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

variable "vpc_id" {
  description = "The home region's VPC (network module)."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets in two or more zones (network module's database_subnet_ids)."
  type        = list(string)
}

variable "client_cidrs" {
  description = "CIDRs of the gateways and SFU nodes of every region (over VPC peering): the only clients admitted."
  type        = list(string)
}

variable "password" {
  description = "Password of the meridian user. It ends up in the roles' TOML (and Terraform state): keep the state encrypted."
  type        = string
  sensitive   = true

  validation {
    condition     = length(var.password) >= 16 && can(regex("^[A-Za-z0-9_.~-]+$", var.password))
    error_message = "password: at least 16 characters of A-Z a-z 0-9 _ . ~ - (it goes into a URL unescaped)."
  }
}

variable "engine_version" {
  description = "Postgres major version."
  type        = string
  default     = "16"
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.t4g.medium"
}

variable "allocated_storage" {
  description = "Storage in GiB (gp3); it grows up to four times this on its own."
  type        = number
  default     = 20
}

variable "multi_az" {
  description = "A standby in a second zone; the store rides out the failover (5 s pool timeouts, gateways route from cache)."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups."
  type        = number
  default     = 7
}

variable "deletion_protection" {
  description = "Refuse to delete the instance (turn off before a deliberate destroy)."
  type        = bool
  default     = true
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
