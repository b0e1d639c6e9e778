# The ports variable is the one source: each rendered file listens on, and
# hands out, exactly ports.*; the exposure covers every port; bad port sets are
# refused with the key named.

variables {
  regions = [
    { id = "eu-west", latitude = 51.51, longitude = -0.13 },
    { id = "ap-south", latitude = 19.07, longitude = 72.87, turn_host = "relay.ap.example.net" },
  ]
  secrets = {
    api_key     = "testkey"
    api_secret  = "test-api-secret-0123456789"
    turn_secret = "test-turn-secret-0123456789"
  }
  database_url = "postgres://meridian:pw@db.internal:5432/meridian"
  gateway      = { public_name = "rtc.example.com" }
  release      = { version = "1.2.3", url = "https://releases.example.com/{version}/meridian" }
}

run "defaults_are_the_documented_ports" {
  command = plan

  assert {
    condition = output.ports == {
      gateway_https = 443, gateway_listen = 7880, sfu_signal = 7881, sfu_metrics = 9101, sfu_udp = 7882,
      sfu_tcp       = 7883, turn = 3478, turn_tls = 5349, turn_metrics = 9102, postgres = 5432,
    }
    error_message = "ports: the defaults of docs/meridian.example.toml."
  }
  assert {
    condition     = toset(flatten([for r in values(output.exposure) : [r.from_port, r.to_port]])) == toset(keys(output.ports))
    error_message = "exposure: every port key is in exactly the rules, and no rule names a key ports lacks."
  }
  assert {
    condition     = [for k, r in output.exposure : k if contains(r.sources, "internet")] == ["gateway_https", "sfu_tcp", "sfu_udp", "turn", "turn_tls"]
    error_message = "exposure: only HTTPS at the load balancer, ICE media (one UDP port, one TCP port) and TURN are public."
  }
  assert {
    condition     = output.exposure.sfu_signal.sources == ["gateways"]
    error_message = "exposure: the SFU signal port is reached by the gateways only."
  }
}

run "rendered_files_listen_on_the_ports" {
  command = plan

  assert {
    condition     = regex("(?m)^listen = \"([^\"]+)\"$", nonsensitive(output.toml.sfu["eu-west"]))[0] == "0.0.0.0:${output.ports.sfu_signal}"
    error_message = "sfu.listen is ports.sfu_signal."
  }
  assert {
    condition     = regex("(?m)^metrics_listen = \"([^\"]+)\"$", nonsensitive(output.toml.sfu["eu-west"]))[0] == "0.0.0.0:${output.ports.sfu_metrics}"
    error_message = "sfu.metrics_listen is ports.sfu_metrics."
  }
  assert {
    condition     = tonumber(regex("(?m)^udp_port = (\\d+)$", nonsensitive(output.toml.sfu["ap-south"]))[0]) == output.ports.sfu_udp
    error_message = "sfu.udp_port is ports.sfu_udp (every peer connection's one UDP port)."
  }
  assert {
    condition     = tonumber(regex("(?m)^tcp_port = (\\d+)$", nonsensitive(output.toml.sfu["ap-south"]))[0]) == output.ports.sfu_tcp
    error_message = "sfu.tcp_port is ports.sfu_tcp (the one ICE/TCP port)."
  }
  assert {
    condition = nonsensitive(output.settings.sfu["ap-south"].turn_urls) == [
      "turn:relay.ap.example.net:3478?transport=udp",
      "turn:relay.ap.example.net:3478?transport=tcp",
      "turns:relay.ap.example.net:5349?transport=tcp",
    ]
    error_message = "sfu.turn_urls: the region's relay name on ports.turn (UDP, TCP) and ports.turn_tls."
  }
  assert {
    condition = alltrue([for u in nonsensitive(output.settings.sfu["eu-west"].turn_urls) :
    strcontains(nonsensitive(output.toml.sfu["eu-west"]), jsonencode(u))])
    error_message = "the TOML lists the turn_urls of settings."
  }
  assert {
    condition = [for k in ["listen", "tcp_listen", "tls_listen", "metrics_listen"] :
      regex("(?m)^${k} = \"([^\"]+)\"$", nonsensitive(output.toml.turn["eu-west"]))[0]
    ] == ["0.0.0.0:3478", "0.0.0.0:3478", "0.0.0.0:5349", "0.0.0.0:9102"]
    error_message = "turn: UDP and TCP on ports.turn, TLS on ports.turn_tls, metrics on ports.turn_metrics."
  }
  assert {
    condition     = regex("(?m)^listen = \"([^\"]+)\"$", nonsensitive(output.toml.gateway["eu-west"]))[0] == "0.0.0.0:${output.ports.gateway_listen}"
    error_message = "gateway.listen is ports.gateway_listen (the load balancer's target)."
  }
  assert {
    condition     = strcontains(nonsensitive(output.files.sfu["eu-west"]["/etc/systemd/system/meridian-sfu-health.service"].content), "http://127.0.0.1:9101/healthz")
    error_message = "the SFU's health watch reads /healthz on ports.sfu_metrics."
  }
  assert {
    condition     = output.public_url == "wss://rtc.example.com"
    error_message = "public_url: wss://<public_name>, no port when gateway_https is 443."
  }
}

run "overridden_ports_reach_every_file" {
  command = plan

  variables {
    ports = { gateway_https = 8443, sfu_signal = 17881, turn = 13478, turn_tls = 443, sfu_udp = 40000, sfu_tcp = 40001 }
  }

  assert {
    condition     = output.ports.sfu_signal == 17881 && output.ports.gateway_listen == 7880
    error_message = "ports: overrides win, the rest keep their defaults."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.sfu["eu-west"]), "listen = \"0.0.0.0:17881\"")
    error_message = "sfu.listen follows ports.sfu_signal."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.sfu["eu-west"]), "\"turns:eu-west.turn.rtc.example.com:443?transport=tcp\"")
    error_message = "turn_urls follow ports.turn_tls, and the relay name defaults to <region>.turn.<public_name>."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.turn["ap-south"]), "tls_listen = \"0.0.0.0:443\"") && strcontains(nonsensitive(output.toml.turn["ap-south"]), "listen = \"0.0.0.0:13478\"")
    error_message = "turn listeners follow ports.turn and ports.turn_tls."
  }
  assert {
    condition     = strcontains(nonsensitive(output.toml.sfu["ap-south"]), "udp_port = 40000\ntcp_port = 40001\n")
    error_message = "the media ports follow ports."
  }
  assert {
    condition     = output.public_url == "wss://rtc.example.com:8443"
    error_message = "public_url carries ports.gateway_https when it is not 443."
  }
}

run "two_roles_on_one_port_are_refused" {
  command = plan
  variables {
    ports = { sfu_metrics = 9102 }
  }
  expect_failures = [var.ports]
}
