variable "name" {
  description = "Name prefix of every resource, e.g. meridian-eu-west."
  type        = string
}

variable "cidr" {
  description = "The region's VPC CIDR, a /16 that no other region's overlaps (the regions are peered), e.g. 10.10.0.0/16."
  type        = string

  validation {
    condition     = can(cidrhost(var.cidr, 0)) && tonumber(split("/", var.cidr)[1]) <= 16
    error_message = "cidr: an IPv4 CIDR of /16 or larger."
  }
}

variable "az_count" {
  description = "Availability zones to spread subnets over (2 or 3)."
  type        = number
  default     = 3

  validation {
    condition     = var.az_count >= 2 && var.az_count <= 3
    error_message = "az_count: 2 or 3 (RDS and the load balancer need two)."
  }
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
