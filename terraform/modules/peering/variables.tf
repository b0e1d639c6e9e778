variable "name" {
  description = "Name of the peering, e.g. meridian-eu-west-us-east."
  type        = string
}

variable "requester" {
  description = "The requesting region's network: vpc_id, cidr, route_table_ids (the network module's outputs)."
  type = object({
    vpc_id          = string
    cidr            = string
    route_table_ids = list(string)
  })
}

variable "accepter" {
  description = "The accepting region's network: vpc_id, cidr, route_table_ids, and region (its AWS region name)."
  type = object({
    vpc_id          = string
    cidr            = string
    route_table_ids = list(string)
    region          = string
  })
}

variable "tags" {
  description = "Tags for every resource."
  type        = map(string)
  default     = {}
}
