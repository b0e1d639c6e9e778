output "ports" {
  description = "Every port of the deployment (see the ports variable): the single source every other module opens, listens on and health-checks."
  value       = local.ports
}

output "exposure" {
  description = "Who may reach each port: per rule, the role whose hosts listen, the protocols, the ports keys of the range (from_port, to_port), the allowed sources (internet, load_balancer, gateways, monitoring, nodes) and what it is. Cloud modules open exactly these."
  value       = local.exposure
}

output "regions" {
  description = "The regions by id, with defaults filled: latitude, longitude, sfu {nodes, max_nodes, size}, turn {nodes, size}, turn_host, bind_address, bind_wildcard, turn_allow_peers."
  value       = local.regions
}

output "default_region" {
  description = "The region for clients that cannot be located."
  value       = local.default_region
}

output "migrate_region" {
  description = "The region whose gateways run `meridian migrate` before they start."
  value       = local.migrate_region
}

output "settings" {
  description = "The values each role's TOML is rendered from, keyed as in docs/meridian.example.toml: api, database, gateway, sfu[region], turn[region]."
  value       = local.settings
  sensitive   = true
}

output "toml" {
  description = "Each role's configuration file: gateway[region], sfu[region], turn[region] (/etc/meridian/<role>.toml on the host)."
  value       = local.toml
  sensitive   = true
}

output "systemd_units" {
  description = "Each role's unit, meridian-<role>.service: `meridian <role> --config /etc/meridian/<role>.toml`, Restart=on-failure, SIGTERM with TimeoutStopSec past the SFU's drain. (The migrate region's gateways get the variant that requires meridian-migrate.service.)"
  value       = local.units
}

output "stop_timeout_seconds" {
  description = "Per role, how long systemd waits after SIGTERM before SIGKILL; a cloud's scale-in wait must exceed the SFU's."
  value       = local.stop_timeout
}

output "files" {
  description = "Per role and region, every file the host gets: path => {permissions, content} (TOML, units, health watch, sysctl). For platforms that provision without cloud-init."
  value       = local.files
  sensitive   = true
}

output "cloud_init" {
  description = "Per role and region, the #cloud-config document: writes the files, installs the release binary, runs the platform hook, enables and starts the unit and its health watch."
  value       = local.cloud_init
  sensitive   = true
}

output "platform_hook" {
  description = "The contract with a cloud's modules: an executable at path, run by cloud-init as `<path> <role>` before the unit starts, writes env_file[role] with env_keys[role] (the per-node keys) and places the TURN TLS files at turn_tls."
  value = {
    path      = local.paths.platform_hook
    env_file  = { for role in local.roles : role => "${local.paths.config_dir}/${role}.env" }
    env_keys  = local.env_keys
    turn_tls  = { cert = var.turn_settings.tls_cert, key = var.turn_settings.tls_key }
    state_dir = "/var/lib/meridian"
  }
}

output "release" {
  description = "The release installed: version and the download URL with {version} filled in."
  value       = { version = var.release.version, url = local.release_url }
}

output "public_url" {
  description = "The URL handed out with tokens ([gateway] public_url)."
  value       = local.public_url
}
