# Meridian in three AWS regions: a VPC per region, peered with the others; a
# gateway tier per region behind one global latency-routed name; SFU nodes
# and TURN relays per region; one RDS Postgres in the home region. Every
# setting and port comes from one call of the config module.

locals {
  # The topology: edit here. The first region is the default and home region
  # (database, migrations). Each AWS region needs its provider alias in
  # versions.tf and its own module blocks below.
  regions = {
    eu-west      = { aws_region = "eu-west-1", cidr = "10.10.0.0/16", latitude = 53.35, longitude = -6.26, sfu = { nodes = 2, max_nodes = 8 }, turn = { nodes = 2 } }
    us-east      = { aws_region = "us-east-1", cidr = "10.20.0.0/16", latitude = 38.9, longitude = -77.04, sfu = { nodes = 2, max_nodes = 8 }, turn = { nodes = 2 } }
    ap-southeast = { aws_region = "ap-southeast-1", cidr = "10.30.0.0/16", latitude = 1.35, longitude = 103.82, sfu = { nodes = 1, max_nodes = 4 }, turn = { nodes = 1 } }
  }
  home = "eu-west"

  net = {
    eu-west      = module.network_eu_west
    us-east      = module.network_us_east
    ap-southeast = module.network_ap_southeast
  }
  gateway_cidrs = { for id, n in local.net : id => n.gateway_cidrs }
  node_cidrs    = { for id, n in local.net : id => n.node_cidrs }
  # A gateway routes a join to the region nearest the client, whichever
  # region's gateway took it: every SFU node admits every gateway subnet.
  remote_gateway_cidrs = { for id in keys(local.regions) : id => flatten([for other, c in local.gateway_cidrs : c if other != id]) }
}

data "aws_route53_zone" "this" {
  provider     = aws.eu_west
  name         = var.zone_name
  private_zone = false
}

# --- Configuration: the one source of settings and ports -----------------------

module "config" {
  source = "../../modules/config"

  regions = [for id in concat([local.home], [for k in keys(local.regions) : k if k != local.home]) : {
    id               = id
    latitude         = local.regions[id].latitude
    longitude        = local.regions[id].longitude
    sfu              = local.regions[id].sfu
    turn             = local.regions[id].turn
    turn_allow_peers = local.node_cidrs[id]
  }]
  secrets      = var.secrets
  database_url = module.database.url
  gateway = {
    public_name     = var.public_name
    trusted_proxies = flatten(values(local.gateway_cidrs))
    geoip_db_url    = var.geoip_db_url
  }
  release      = var.release
  sfu_settings = { drain_grace = var.sfu_drain_grace }
}

# --- Networks and peering ---------------------------------------------------------

module "network_eu_west" {
  source    = "../../modules/network"
  providers = { aws = aws.eu_west }
  name      = "meridian-eu-west"
  cidr      = local.regions.eu-west.cidr
}

module "network_us_east" {
  source    = "../../modules/network"
  providers = { aws = aws.us_east }
  name      = "meridian-us-east"
  cidr      = local.regions.us-east.cidr
}

module "network_ap_southeast" {
  source    = "../../modules/network"
  providers = { aws = aws.ap_southeast }
  name      = "meridian-ap-southeast"
  cidr      = local.regions.ap-southeast.cidr
}

module "peering_eu_west_us_east" {
  source    = "../../modules/peering"
  providers = { aws.requester = aws.eu_west, aws.accepter = aws.us_east }
  name      = "meridian-eu-west-us-east"
  requester = module.network_eu_west
  accepter  = merge(module.network_us_east, { region = local.regions.us-east.aws_region })
}

module "peering_eu_west_ap_southeast" {
  source    = "../../modules/peering"
  providers = { aws.requester = aws.eu_west, aws.accepter = aws.ap_southeast }
  name      = "meridian-eu-west-ap-southeast"
  requester = module.network_eu_west
  accepter  = merge(module.network_ap_southeast, { region = local.regions.ap-southeast.aws_region })
}

module "peering_us_east_ap_southeast" {
  source    = "../../modules/peering"
  providers = { aws.requester = aws.us_east, aws.accepter = aws.ap_southeast }
  name      = "meridian-us-east-ap-southeast"
  requester = module.network_us_east
  accepter  = merge(module.network_ap_southeast, { region = local.regions.ap-southeast.aws_region })
}

# --- Database, in the home region -------------------------------------------------

module "database" {
  source       = "../../modules/database"
  providers    = { aws = aws.eu_west }
  ports        = module.config.ports
  vpc_id       = module.network_eu_west.vpc_id
  subnet_ids   = module.network_eu_west.database_subnet_ids
  client_cidrs = concat(flatten(values(local.gateway_cidrs)), flatten(values(local.node_cidrs)))
  password     = var.database_password
}

# --- Gateways: one tier per region, one global name -------------------------------

module "gateway_eu_west" {
  source           = "../../modules/gateway"
  providers        = { aws = aws.eu_west }
  region_id        = "eu-west"
  public_name      = var.public_name
  ports            = module.config.ports
  cloud_init       = module.config.cloud_init.gateway["eu-west"]
  vpc_id           = module.network_eu_west.vpc_id
  subnet_ids       = module.network_eu_west.gateway_subnet_ids
  zone_id          = data.aws_route53_zone.this.zone_id
  monitoring_cidrs = var.monitoring_cidrs
}

module "gateway_us_east" {
  source           = "../../modules/gateway"
  providers        = { aws = aws.us_east }
  region_id        = "us-east"
  public_name      = var.public_name
  ports            = module.config.ports
  cloud_init       = module.config.cloud_init.gateway["us-east"]
  vpc_id           = module.network_us_east.vpc_id
  subnet_ids       = module.network_us_east.gateway_subnet_ids
  zone_id          = data.aws_route53_zone.this.zone_id
  monitoring_cidrs = var.monitoring_cidrs
}

module "gateway_ap_southeast" {
  source           = "../../modules/gateway"
  providers        = { aws = aws.ap_southeast }
  region_id        = "ap-southeast"
  public_name      = var.public_name
  ports            = module.config.ports
  cloud_init       = module.config.cloud_init.gateway["ap-southeast"]
  vpc_id           = module.network_ap_southeast.vpc_id
  subnet_ids       = module.network_ap_southeast.gateway_subnet_ids
  zone_id          = data.aws_route53_zone.this.zone_id
  monitoring_cidrs = var.monitoring_cidrs
}

# --- Media: SFU nodes and TURN relays per region ----------------------------------

module "region_eu_west" {
  source                    = "../../modules/region"
  providers                 = { aws = aws.eu_west }
  region                    = module.config.regions["eu-west"]
  ports                     = module.config.ports
  cloud_init                = { sfu = module.config.cloud_init.sfu["eu-west"], turn = module.config.cloud_init.turn["eu-west"] }
  platform_hook             = module.config.platform_hook
  sfu_stop_timeout_seconds  = module.config.stop_timeout_seconds.sfu
  vpc_id                    = module.network_eu_west.vpc_id
  subnet_ids                = module.network_eu_west.node_subnet_ids
  gateway_security_group_id = module.gateway_eu_west.security_group_id
  remote_gateway_cidrs      = local.remote_gateway_cidrs["eu-west"]
  monitoring_cidrs          = var.monitoring_cidrs
  zone_id                   = data.aws_route53_zone.this.zone_id
  turn_tls_parameters       = var.turn_tls_parameters
  scaling                   = var.scaling
}

module "region_us_east" {
  source                    = "../../modules/region"
  providers                 = { aws = aws.us_east }
  region                    = module.config.regions["us-east"]
  ports                     = module.config.ports
  cloud_init                = { sfu = module.config.cloud_init.sfu["us-east"], turn = module.config.cloud_init.turn["us-east"] }
  platform_hook             = module.config.platform_hook
  sfu_stop_timeout_seconds  = module.config.stop_timeout_seconds.sfu
  vpc_id                    = module.network_us_east.vpc_id
  subnet_ids                = module.network_us_east.node_subnet_ids
  gateway_security_group_id = module.gateway_us_east.security_group_id
  remote_gateway_cidrs      = local.remote_gateway_cidrs["us-east"]
  monitoring_cidrs          = var.monitoring_cidrs
  zone_id                   = data.aws_route53_zone.this.zone_id
  turn_tls_parameters       = var.turn_tls_parameters
  scaling                   = var.scaling
}

module "region_ap_southeast" {
  source                    = "../../modules/region"
  providers                 = { aws = aws.ap_southeast }
  region                    = module.config.regions["ap-southeast"]
  ports                     = module.config.ports
  cloud_init                = { sfu = module.config.cloud_init.sfu["ap-southeast"], turn = module.config.cloud_init.turn["ap-southeast"] }
  platform_hook             = module.config.platform_hook
  sfu_stop_timeout_seconds  = module.config.stop_timeout_seconds.sfu
  vpc_id                    = module.network_ap_southeast.vpc_id
  subnet_ids                = module.network_ap_southeast.node_subnet_ids
  gateway_security_group_id = module.gateway_ap_southeast.security_group_id
  remote_gateway_cidrs      = local.remote_gateway_cidrs["ap-southeast"]
  monitoring_cidrs          = var.monitoring_cidrs
  zone_id                   = data.aws_route53_zone.this.zone_id
  turn_tls_parameters       = var.turn_tls_parameters
  scaling                   = var.scaling
}

# --- Egress: a placeholder until the role exists ----------------------------------

module "egress_eu_west" {
  source     = "../../modules/egress"
  region_id  = "eu-west"
  ports      = module.config.ports
  vpc_id     = module.network_eu_west.vpc_id
  subnet_ids = module.network_eu_west.node_subnet_ids
}
