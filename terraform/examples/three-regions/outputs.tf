output "public_url" {
  description = "The URL clients and the token API hand out."
  value       = module.config.public_url
}

output "ports" {
  description = "Every port of the deployment."
  value       = module.config.ports
}

output "turn_hosts" {
  description = "Each region's relay name and addresses."
  value = {
    eu-west      = { host = module.region_eu_west.turn_host, ips = module.region_eu_west.turn_public_ips }
    us-east      = { host = module.region_us_east.turn_host, ips = module.region_us_east.turn_public_ips }
    ap-southeast = { host = module.region_ap_southeast.turn_host, ips = module.region_ap_southeast.turn_public_ips }
  }
}

output "sfu_autoscaling_groups" {
  description = "Each region's SFU group, for `aws autoscaling` by hand."
  value = {
    eu-west      = module.region_eu_west.sfu_autoscaling_group
    us-east      = module.region_us_east.sfu_autoscaling_group
    ap-southeast = module.region_ap_southeast.sfu_autoscaling_group
  }
}

output "gateway_load_balancers" {
  description = "Each region's gateway load balancer (curl -k https://<name>/healthz)."
  value = {
    eu-west      = module.gateway_eu_west.load_balancer_dns_name
    us-east      = module.gateway_us_east.load_balancer_dns_name
    ap-southeast = module.gateway_ap_southeast.load_balancer_dns_name
  }
}

output "database_address" {
  description = "The database's host name (private)."
  value       = module.database.address
}
