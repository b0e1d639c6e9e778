# A two-region deployment on loopback, rendered by the config module alone:
# terraform/tests/render.sh applies it and writes each role's files from its
# outputs, for the end-to-end test that boots `meridian` from exactly them.
# Region A listens on 127.0.1.1, region B on 127.0.2.1 (same ports, as on
# separate hosts), the gateway on 127.0.0.1.
terraform {
  required_version = ">= 1.9"
}

variable "database_url" {
  description = "Postgres the rendered gateway and nodes share."
  type        = string
  default     = "postgres://postgres@127.0.0.1:5432/test"
}

variable "tls_dir" {
  description = "Directory the TURN TLS certificate and key are read from (the test writes a self-signed pair there)."
  type        = string
  default     = "/tmp/meridian-render/tls"
}

variable "ports" {
  description = "Port overrides, as the config module's ports variable."
  type        = map(number)
  default     = {}
}

module "config" {
  source = "../../modules/config"

  regions = [
    {
      id           = "eu-west", latitude = 51.51, longitude = -0.13
      bind_address = "127.0.1.1", turn_host = "127.0.1.1", turn_allow_peers = ["127.0.1.0/24"]
    },
    {
      id           = "us-east", latitude = 38.9, longitude = -77.04
      bind_address = "127.0.2.1", turn_host = "127.0.2.1", turn_allow_peers = ["127.0.2.0/24"]
    },
  ]
  ports = var.ports
  secrets = {
    api_key     = "renderkey"
    api_secret  = "render-api-secret-0123456789"
    turn_secret = "render-turn-secret-0123456789"
  }
  database_url = var.database_url
  gateway = {
    public_name     = "rtc.example.com"
    public_url      = "ws://127.0.0.1:${lookup(var.ports, "gateway_listen", 7880)}"
    bind_address    = "127.0.0.1"
    trusted_proxies = ["127.0.0.0/8"]
  }
  release = {
    version = "0.0.0-render"
    url     = "https://releases.example.com/meridian/{version}/meridian-x86_64-linux"
  }
  sfu_settings = { include_loopback = true, drain_grace = 5 }
  turn_settings = {
    tls_cert = "${var.tls_dir}/turn.crt"
    tls_key  = "${var.tls_dir}/turn.key"
  }
}

output "ports" {
  description = "The config module's ports."
  value       = module.config.ports
}

output "exposure" {
  description = "The config module's exposure (who may reach each port)."
  value       = module.config.exposure
}

output "toml" {
  description = "Each role's TOML by region."
  value       = module.config.toml
  sensitive   = true
}

output "systemd_units" {
  description = "Each role's unit."
  value       = module.config.systemd_units
}

output "cloud_init" {
  description = "Each role's cloud-init document by region."
  value       = module.config.cloud_init
  sensitive   = true
}

output "regions" {
  description = "The regions as the config module filled them in."
  value       = module.config.regions
}
