# A placeholder: the egress role (recording and streaming rooms, the broadcast
# studio issue) does not exist in the binary yet. These are the inputs the
# module will take, so that the example can wire it now and an operator sees
# where egress will go. See README.md.

variable "enabled" {
  description = "Whether to create the egress workers. Must stay false until `meridian egress` exists."
  type        = bool
  default     = false

  validation {
    condition     = !var.enabled
    error_message = "enabled: the egress role does not exist yet (terraform/modules/egress/README.md)."
  }
}

variable "region_id" {
  description = "The Meridian region the workers serve."
  type        = string
}

variable "ports" {
  description = "The config module's ports output (egress workers open no port of their own: they connect out to the SFU nodes and the upload target)."
  type        = map(number)
}

variable "vpc_id" {
  description = "The region's VPC."
  type        = string
}

variable "subnet_ids" {
  description = "Subnets of the workers: their own machines, apart from the SFU nodes (encoding would starve the forwarding)."
  type        = list(string)
}

variable "nodes" {
  description = "Worker group: min, max and instance type (CPU- or GPU-heavy, unlike the SFU)."
  type = object({
    min           = optional(number, 0)
    max           = optional(number, 4)
    instance_type = optional(string, "c6i.2xlarge")
  })
  default = {}
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
