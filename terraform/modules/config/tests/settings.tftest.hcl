# What each role is told: the region's coordinates reach its SFU nodes, the
# relay and the nodes share one TURN secret, the units stop by SIGTERM with
# time for the drain, cloud-init writes and starts exactly the role, and bad
# inputs are refused naming the variable.

variables {
  regions = [
    { id = "eu-west", latitude = 53.35, longitude = -6.26, turn_allow_peers = ["10.10.0.0/16"] },
    { id = "us-east", latitude = 38.9, longitude = -77 },
    { id = "ap-southeast", latitude = 1.35, longitude = 103.82 },
  ]
  default_region = "us-east"
  secrets = {
    api_key     = "prodkey"
    api_secret  = "prod-api-secret-0123456789"
    turn_secret = "prod-turn-secret-0123456789"
  }
  database_url = "postgres://meridian:pw@db.internal:5432/meridian"
  gateway = {
    public_name     = "rtc.example.com"
    trusted_proxies = ["10.10.0.0/16", "10.20.0.0/16"]
    geoip_db_url    = "https://geo.example.com/GeoLite2-City.mmdb"
  }
  release      = { version = "1.2.3", url = "https://releases.example.com/{version}/meridian", sha256 = "0000000000000000000000000000000000000000000000000000000000000000" }
  sfu_settings = { drain_grace = 120, capacity = 300 }
  environment  = { OTEL_EXPORTER_OTLP_ENDPOINT = "http://collector.internal:4318" }
}

run "coordinates_and_region_reach_the_sfu" {
  command = plan

  assert {
    condition = [for id in ["eu-west", "us-east", "ap-southeast"] : [
      regex("(?m)^region = \"([^\"]+)\"$", nonsensitive(output.toml.sfu[id]))[0],
      tonumber(regex("(?m)^latitude = (\\S+)$", nonsensitive(output.toml.sfu[id]))[0]),
      tonumber(regex("(?m)^longitude = (\\S+)$", nonsensitive(output.toml.sfu[id]))[0]),
    ]] == [["eu-west", 53.35, -6.26], ["us-east", 38.9, -77], ["ap-southeast", 1.35, 103.82]]
    error_message = "each region's id and coordinates reach its SFU TOML."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.sfu["us-east"]), "longitude = -77.000000\n")
    error_message = "a whole-degree coordinate is written as a TOML float (the binary reads f64)."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.sfu["eu-west"]), "capacity = 300\n") && strcontains(nonsensitive(output.toml.sfu["eu-west"]), "drain_grace = 120\n")
    error_message = "sfu_settings reach the TOML."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.sfu["eu-west"]), "include_loopback = false\n")
    error_message = "production nodes offer no loopback candidates."
  }
}

run "relay_and_nodes_share_the_turn_secret" {
  command = plan

  assert {
    condition = alltrue([for id in ["eu-west", "us-east", "ap-southeast"] :
      regex("(?m)^secret = \"([^\"]+)\"$", nonsensitive(output.toml.turn[id]))[0] == regex("(?m)^turn_secret = \"([^\"]+)\"$", nonsensitive(output.toml.sfu[id]))[0]
    ])
    error_message = "the TURN TOML's secret equals the SFU's turn_secret in every region."
  }
  assert {
    condition     = regex("(?m)^secret = \"([^\"]+)\"$", nonsensitive(output.toml.turn["eu-west"]))[0] == "prod-turn-secret-0123456789"
    error_message = "the secret is secrets.turn_secret."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.turn["eu-west"]), "allow_peers = [\"10.10.0.0/16\"]\n") && strcontains(nonsensitive(output.toml.turn["us-east"]), "allow_peers = []\n")
    error_message = "turn.allow_peers is the region's turn_allow_peers."
  }
  assert {
    condition     = !strcontains(nonsensitive(output.toml.turn["eu-west"]), "[api]") && !strcontains(nonsensitive(output.toml.turn["eu-west"]), "[database]")
    error_message = "the relay gets neither the API secret nor the database URL: it needs neither."
  }
}

run "the_gateway_serves_behind_the_load_balancer" {
  command = plan

  assert {
    condition     = strcontains(nonsensitive(output.toml.gateway["eu-west"]), "default_region = \"us-east\"\n")
    error_message = "gateway.default_region is default_region."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.gateway["eu-west"]), "plain_http = true\n") && !strcontains(nonsensitive(output.toml.gateway["eu-west"]), "tls_cert")
    error_message = "TLS terminates at the load balancer."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.gateway["ap-southeast"]), "trusted_proxies = [\"10.10.0.0/16\",\"10.20.0.0/16\"]\n")
    error_message = "gateway.trusted_proxies are the load balancers' subnets."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.gateway["eu-west"]), "geoip_db = \"/var/lib/meridian/GeoLite2-City.mmdb\"\n")
    error_message = "with geoip_db_url the gateway reads the downloaded database."
  }
  assert {
    condition     = strcontains(nonsensitive(output.cloud_init.gateway["eu-west"]), "https://geo.example.com/GeoLite2-City.mmdb")
    error_message = "cloud-init downloads the City database."
  }
}

run "units_stop_by_sigterm_with_time_to_drain" {
  command = plan

  assert {
    condition = alltrue([for role in ["gateway", "sfu", "turn"] :
      strcontains(output.systemd_units[role], "\nExecStart=/usr/local/bin/meridian ${role} --config /etc/meridian/${role}.toml\n") &&
      strcontains(output.systemd_units[role], "\nRestart=on-failure\n") &&
      strcontains(output.systemd_units[role], "\nKillSignal=SIGTERM\n")
    ])
    error_message = "every unit runs `meridian <role> --config /etc/meridian/<role>.toml`, restarts on failure and stops by SIGTERM."
  }
  assert {
    condition     = tonumber(regex("(?m)^TimeoutStopSec=(\\d+)$", output.systemd_units.sfu)[0]) > 120
    error_message = "the SFU's TimeoutStopSec exceeds its drain_grace (120 s)."
  }
  assert {
    condition     = output.stop_timeout_seconds.sfu == tonumber(regex("(?m)^TimeoutStopSec=(\\d+)$", output.systemd_units.sfu)[0])
    error_message = "stop_timeout_seconds is what the unit says."
  }
  assert {
    condition     = strcontains(output.systemd_units.sfu, "Environment=\"OTEL_EXPORTER_OTLP_ENDPOINT=http://collector.internal:4318\"\n")
    error_message = "environment reaches the units."
  }
  assert {
    condition     = strcontains(output.systemd_units.turn, "ExecReload=") && !strcontains(output.systemd_units.sfu, "ExecReload=") && !strcontains(output.systemd_units.gateway, "ExecReload=")
    error_message = "only the relay reloads on SIGHUP (its TLS files); a gateway without TLS or a node would die of it."
  }
}

run "cloud_init_writes_and_starts_the_role" {
  command = plan

  assert {
    condition = alltrue([for role in ["gateway", "sfu", "turn"] : alltrue([for id in ["eu-west", "us-east"] :
      startswith(nonsensitive(output.cloud_init[role][id]), "#cloud-config\n") &&
      contains([for f in yamldecode(nonsensitive(output.cloud_init[role][id])).write_files : f.path], "/etc/meridian/${role}.toml") &&
      contains([for f in yamldecode(nonsensitive(output.cloud_init[role][id])).write_files : f.path], "/etc/systemd/system/meridian-${role}.service") &&
      contains(yamldecode(nonsensitive(output.cloud_init[role][id])).runcmd, ["systemctl", "enable", "--now", "meridian-${role}.service", "meridian-${role}-health.timer"])
    ])])
    error_message = "each document writes its role's TOML and unit, and enables and starts them."
  }
  assert {
    condition = [for f in yamldecode(nonsensitive(output.cloud_init.sfu["ap-southeast"])).write_files : f.content
    if f.path == "/etc/meridian/sfu.toml"] == [nonsensitive(output.toml.sfu["ap-southeast"])]
    error_message = "cloud-init writes the TOML of the toml output, byte for byte."
  }
  assert {
    condition = contains(yamldecode(nonsensitive(output.cloud_init.turn["eu-west"])).runcmd,
    ["curl", "-fsSL", "--retry", "5", "--retry-connrefused", "-o", "/usr/local/bin/meridian.download", "https://releases.example.com/1.2.3/meridian"])
    error_message = "the release binary is downloaded from release.url with {version} filled in."
  }
  assert {
    condition     = strcontains(nonsensitive(output.cloud_init.turn["eu-west"]), "sha256sum -c")
    error_message = "with release.sha256 the download is checked before install."
  }
  assert {
    condition = (
      contains(keys(nonsensitive(output.files.gateway["us-east"])), "/etc/systemd/system/meridian-migrate.service") &&
      !contains(keys(nonsensitive(output.files.gateway["eu-west"])), "/etc/systemd/system/meridian-migrate.service") &&
      output.migrate_region == "us-east"
    )
    error_message = "only the migrate region's gateways (by default the default region) run the migration unit."
  }
  assert {
    condition     = strcontains(nonsensitive(output.files.gateway["us-east"]["/etc/systemd/system/meridian-gateway.service"].content), "After=meridian-migrate.service")
    error_message = "there the gateway starts after the migration."
  }
  assert {
    condition     = strcontains(nonsensitive(output.cloud_init.sfu["eu-west"]), output.platform_hook.path)
    error_message = "cloud-init runs the platform hook."
  }
}

run "bind_address_makes_the_toml_complete" {
  command = plan

  variables {
    regions        = [{ id = "local", latitude = 0, longitude = 0, bind_address = "127.0.1.1", turn_host = "127.0.1.1" }]
    default_region = null
    gateway        = { public_name = "rtc.example.com", bind_address = "::1" }
  }

  assert {
    condition     = strcontains(nonsensitive(output.toml.sfu.local), "listen = \"127.0.1.1:7881\"\n") && !strcontains(nonsensitive(output.toml.sfu.local), "sfu.env")
    error_message = "a concrete bind address needs no per-node keys (advertise and relay_ip default to it)."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.gateway.local), "listen = \"[::1]:7880\"\n")
    error_message = "IPv6 listen addresses are bracketed."
  }
  assert {
    condition     = strcontains(nonsensitive(output.files.turn.local["/etc/systemd/system/meridian-turn-health.service"].content), "http://127.0.1.1:9102/healthz")
    error_message = "the health watch reaches the bound address."
  }
}

run "duplicate_region_ids_are_refused" {
  command = plan
  variables {
    regions        = [{ id = "eu", latitude = 0, longitude = 0 }, { id = "eu", latitude = 1, longitude = 1 }]
    default_region = null
  }
  expect_failures = [var.regions]
}

run "coordinates_out_of_range_are_refused" {
  command = plan
  variables {
    regions        = [{ id = "eu", latitude = 91, longitude = 0 }]
    default_region = null
  }
  expect_failures = [var.regions]
}

run "a_default_region_that_is_not_a_region_is_refused" {
  command = plan
  variables {
    default_region = "mars"
  }
  expect_failures = [var.default_region]
}

run "a_short_api_secret_is_refused" {
  command = plan
  variables {
    secrets = { api_key = "k", api_secret = "short", turn_secret = "prod-turn-secret-0123456789" }
  }
  expect_failures = [var.secrets]
}
