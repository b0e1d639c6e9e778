locals {
  # Where everything lives on a host. Fixed: the units, the cloud-init
  # documents and docs/deploy.md all name these paths.
  paths = {
    binary        = "/usr/local/bin/meridian"
    config_dir    = "/etc/meridian"
    lib_dir       = "/usr/local/lib/meridian"
    geoip_db      = "/var/lib/meridian/GeoLite2-City.mmdb"
    platform_hook = "/usr/local/lib/meridian/platform-boot"
  }

  ports = var.ports

  # Who may reach each port: the one description of the firewall. The cloud
  # modules open exactly these (terraform/tests/check_modules.py checks it).
  # sources: "internet", "load_balancer" (the gateways' load balancer),
  # "gateways" (the gateway instances, in any region), "monitoring" (the
  # Prometheus scrapers), "nodes" (gateways and SFU nodes, for the database).
  exposure = {
    gateway_https = {
      role    = "gateway_lb", protocols = ["tcp"], from_port = "gateway_https", to_port = "gateway_https",
      sources = ["internet"], what = "HTTPS/WSS at the load balancer (token API, /rtc)"
    }
    gateway_listen = {
      role    = "gateway", protocols = ["tcp"], from_port = "gateway_listen", to_port = "gateway_listen",
      sources = ["load_balancer", "monitoring"], what = "the gateway process: API, /rtc, /healthz, /metrics"
    }
    sfu_signal = {
      role    = "sfu", protocols = ["tcp"], from_port = "sfu_signal", to_port = "sfu_signal",
      sources = ["gateways"], what = "signal WebSocket, proxied by the gateways only"
    }
    sfu_metrics = {
      role    = "sfu", protocols = ["tcp"], from_port = "sfu_metrics", to_port = "sfu_metrics",
      sources = ["monitoring"], what = "/metrics and /healthz of an SFU node"
    }
    sfu_udp = {
      role    = "sfu", protocols = ["udp"], from_port = "sfu_udp", to_port = "sfu_udp",
      sources = ["internet"], what = "ICE/RTP media of an SFU node's peer connections, one port for all"
    }
    sfu_tcp = {
      role    = "sfu", protocols = ["tcp"], from_port = "sfu_tcp", to_port = "sfu_tcp",
      sources = ["internet"], what = "ICE over TCP of an SFU node's peer connections, one port for all"
    }
    turn = {
      role    = "turn", protocols = ["udp", "tcp"], from_port = "turn", to_port = "turn",
      sources = ["internet"], what = "TURN over UDP and TCP"
    }
    turn_tls = {
      role    = "turn", protocols = ["tcp"], from_port = "turn_tls", to_port = "turn_tls",
      sources = ["internet"], what = "TURN over TLS"
    }
    turn_metrics = {
      role    = "turn", protocols = ["tcp"], from_port = "turn_metrics", to_port = "turn_metrics",
      sources = ["monitoring"], what = "/metrics and /healthz of a relay"
    }
    postgres = {
      role    = "database", protocols = ["tcp"], from_port = "postgres", to_port = "postgres",
      sources = ["nodes"], what = "Postgres, from gateways and SFU nodes"
    }
  }

  default_region = coalesce(var.default_region, var.regions[0].id)
  migrate_region = coalesce(var.migrate_region, local.default_region)
  turn_domain    = coalesce(var.turn_domain, "turn.${var.gateway.public_name}")

  # host:port, with brackets for IPv6.
  hostport = { for name, ip in merge(
    { gateway = var.gateway.bind_address },
    { for r in var.regions : "region:${r.id}" => r.bind_address },
  ) : name => (strcontains(ip, ":") ? "[${ip}]" : ip) }

  wildcard = ["0.0.0.0", "::"]

  regions = { for r in var.regions : r.id => {
    id            = r.id
    latitude      = r.latitude
    longitude     = r.longitude
    sfu           = r.sfu
    turn          = r.turn
    turn_host     = coalesce(r.turn_host, "${r.id}.${local.turn_domain}")
    bind_address  = r.bind_address
    bind_wildcard = contains(local.wildcard, r.bind_address)
    # Where a local check reaches the role's own listeners.
    local_address    = contains(local.wildcard, r.bind_address) ? "127.0.0.1" : local.hostport["region:${r.id}"]
    turn_allow_peers = r.turn_allow_peers
  } }

  gateway_local_address = contains(local.wildcard, var.gateway.bind_address) ? "127.0.0.1" : local.hostport.gateway
  public_url = coalesce(
    var.gateway.public_url,
    var.ports.gateway_https == 443 ? "wss://${var.gateway.public_name}" : "wss://${var.gateway.public_name}:${var.ports.gateway_https}",
  )

  # The values each role's TOML is rendered from, keyed as in
  # docs/meridian.example.toml: what the tests assert on and what the
  # templates print, so they cannot disagree.
  settings = {
    api      = { key = var.secrets.api_key, secret = var.secrets.api_secret }
    database = { url = var.database_url }
    gateway = {
      listen          = "${local.hostport.gateway}:${var.ports.gateway_listen}"
      public_url      = local.public_url
      default_region  = local.default_region
      trusted_proxies = var.gateway.trusted_proxies
      geoip_db        = var.gateway.geoip_db_url == null ? null : local.paths.geoip_db
      plain_http      = true
      max_connections = var.gateway.max_connections
    }
    sfu = { for id, r in local.regions : id => {
      region    = id
      latitude  = r.latitude
      longitude = r.longitude
      listen    = "${local.hostport["region:${id}"]}:${var.ports.sfu_signal}"
      capacity  = var.sfu_settings.capacity
      turn_urls = [
        "turn:${r.turn_host}:${var.ports.turn}?transport=udp",
        "turn:${r.turn_host}:${var.ports.turn}?transport=tcp",
        "turns:${r.turn_host}:${var.ports.turn_tls}?transport=tcp",
      ]
      turn_secret      = var.secrets.turn_secret
      turn_probe       = "${r.turn_host}:${var.ports.turn}"
      include_loopback = var.sfu_settings.include_loopback
      drain_grace      = var.sfu_settings.drain_grace
      metrics_listen   = "${local.hostport["region:${id}"]}:${var.ports.sfu_metrics}"
      udp_port         = var.ports.sfu_udp
      tcp_port         = var.ports.sfu_tcp
    } }
    turn = { for id, r in local.regions : id => {
      listen            = "${local.hostport["region:${id}"]}:${var.ports.turn}"
      realm             = var.turn_settings.realm
      secret            = var.secrets.turn_secret
      recv_buffer_bytes = var.turn_settings.recv_buffer_bytes
      metrics_listen    = "${local.hostport["region:${id}"]}:${var.ports.turn_metrics}"
      tcp_listen        = "${local.hostport["region:${id}"]}:${var.ports.turn}"
      tls_listen        = "${local.hostport["region:${id}"]}:${var.ports.turn_tls}"
      tls_cert          = var.turn_settings.tls_cert
      tls_key           = var.turn_settings.tls_key
      user_quota        = var.turn_settings.user_quota
      total_quota       = var.turn_settings.total_quota
      bandwidth_cap     = var.turn_settings.bandwidth_cap
      allow_peers       = r.turn_allow_peers
      deny_peers        = var.turn_settings.deny_peers
    } }
  }

  # systemd gives a stopping unit this long before SIGKILL: the SFU's drain
  # plus time to close its sockets and leave the registry.
  stop_timeout = {
    gateway = 30
    sfu     = var.sfu_settings.drain_grace + 30
    turn    = 30
  }

  # The environment file a platform hook writes with the per-node keys.
  env_keys = {
    gateway = []
    sfu     = ["MERIDIAN_SFU_NODE_ID", "MERIDIAN_SFU_ADVERTISE", "MERIDIAN_SFU_NODE_IP"]
    turn    = ["MERIDIAN_TURN_RELAY_IP"]
  }

  roles = ["gateway", "sfu", "turn"]

  toml = {
    gateway = { for id, r in local.regions : id => templatefile("${path.module}/templates/gateway.toml.tftpl", {
      region = id, version = var.release.version, s = local.settings, g = local.settings.gateway
    }) }
    sfu = { for id, r in local.regions : id => templatefile("${path.module}/templates/sfu.toml.tftpl", {
      region   = id, version = var.release.version, s = local.settings, n = local.settings.sfu[id],
      wildcard = r.bind_wildcard
    }) }
    turn = { for id, r in local.regions : id => templatefile("${path.module}/templates/turn.toml.tftpl", {
      region = id, version = var.release.version, t = local.settings.turn[id], wildcard = r.bind_wildcard
    }) }
  }

  units = { for role in local.roles : role => templatefile("${path.module}/templates/role.service.tftpl", {
    role         = role
    binary       = local.paths.binary
    config_dir   = local.paths.config_dir
    stop_timeout = local.stop_timeout[role]
    drain_grace  = role == "sfu" ? var.sfu_settings.drain_grace : null
    environment  = var.environment
    migrate      = false
  }) }

  # The gateways of the migrate region run `meridian migrate` before they start.
  gateway_unit_migrating = templatefile("${path.module}/templates/role.service.tftpl", {
    role         = "gateway"
    binary       = local.paths.binary
    config_dir   = local.paths.config_dir
    stop_timeout = local.stop_timeout.gateway
    drain_grace  = null
    environment  = var.environment
    migrate      = true
  })

  migrate_unit = templatefile("${path.module}/templates/migrate.service.tftpl", {
    binary     = local.paths.binary
    config_dir = local.paths.config_dir
  })

  health_urls = {
    gateway = { for id, r in local.regions : id => "http://${local.gateway_local_address}:${var.ports.gateway_listen}/healthz" }
    sfu     = { for id, r in local.regions : id => "http://${r.local_address}:${var.ports.sfu_metrics}/healthz" }
    turn    = { for id, r in local.regions : id => "http://${r.local_address}:${var.ports.turn_metrics}/healthz" }
  }

  release_url = replace(var.release.url, "{version}", var.release.version)

  # Every file a host of (role, region) gets, by path. cloud-init writes them;
  # a platform that provisions otherwise (an image builder, Ansible) can too.
  files = { for role in local.roles : role => { for id, r in local.regions : id => merge(
    {
      "${local.paths.config_dir}/${role}.toml" = { permissions = "0640", content = local.toml[role][id] }
      "/etc/systemd/system/meridian-${role}.service" = {
        permissions = "0644"
        content     = role == "gateway" && id == local.migrate_region ? local.gateway_unit_migrating : local.units[role]
      }
      "/etc/systemd/system/meridian-${role}-health.service" = {
        permissions = "0644"
        content = templatefile("${path.module}/templates/health.service.tftpl", {
          role = role, lib_dir = local.paths.lib_dir, url = local.health_urls[role][id]
        })
      }
      "/etc/systemd/system/meridian-${role}-health.timer" = {
        permissions = "0644"
        content     = templatefile("${path.module}/templates/health.timer.tftpl", { role = role })
      }
      "${local.paths.lib_dir}/health-watch" = {
        permissions = "0755"
        content     = file("${path.module}/templates/health-watch.sh")
      }
    },
    role == "gateway" && id == local.migrate_region ? {
      "/etc/systemd/system/meridian-migrate.service" = { permissions = "0644", content = local.migrate_unit }
      # Single quotes: systemd takes the value as it is (the URL has no quote).
      "${local.paths.config_dir}/migrate.env" = { permissions = "0640", content = "DATABASE_URL='${var.database_url}'\n" }
    } : {},
    role != "gateway" ? {
      # The relay's receive buffer (and the SFU's sockets) need the kernel to
      # allow it: an unprivileged SO_RCVBUF is capped at rmem_max.
      "/etc/sysctl.d/60-meridian.conf" = {
        permissions = "0644"
        content     = "net.core.rmem_max = ${max(var.turn_settings.recv_buffer_bytes * 2, 8388608)}\nnet.core.wmem_max = ${max(var.turn_settings.recv_buffer_bytes * 2, 8388608)}\n"
      }
    } : {},
  ) } }

  cloud_init = { for role in local.roles : role => { for id, r in local.regions : id => join("\n", [
    "#cloud-config",
    "# meridian ${role}, region ${id}, release ${var.release.version}: rendered by terraform/modules/config.",
    yamlencode({
      write_files = [for p, f in local.files[role][id] : {
        path        = p
        permissions = f.permissions
        owner       = "root:root"
        content     = f.content
      }]
      runcmd = concat(
        [
          ["sh", "-c", "id meridian >/dev/null 2>&1 || useradd --system --no-create-home --home-dir /var/lib/meridian --shell /sbin/nologin meridian"],
          ["install", "-d", "-o", "meridian", "-g", "meridian", "-m", "0750", "/var/lib/meridian"],
          ["sh", "-c", "sysctl --system >/dev/null || true"],
          ["curl", "-fsSL", "--retry", "5", "--retry-connrefused", "-o", "${local.paths.binary}.download", local.release_url],
        ],
        var.release.sha256 == null ? [] : [
          ["sh", "-c", "echo '${coalesce(var.release.sha256, "-")}  ${local.paths.binary}.download' | sha256sum -c -"],
        ],
        [
          ["install", "-m", "0755", "${local.paths.binary}.download", local.paths.binary],
          ["rm", "-f", "${local.paths.binary}.download"],
        ],
        role == "gateway" && var.gateway.geoip_db_url != null ? [
          ["curl", "-fsSL", "--retry", "5", "-o", local.paths.geoip_db, coalesce(var.gateway.geoip_db_url, "-")],
        ] : [],
        [
          # The platform's hook: per-node keys into ${role}.env, TLS files, EIP.
          ["sh", "-c", "if [ -x ${local.paths.platform_hook} ]; then ${local.paths.platform_hook} ${role}; fi"],
          ["sh", "-c", "chgrp -R meridian ${local.paths.config_dir} && chmod -R g+rX,o-rwx ${local.paths.config_dir}"],
          ["systemctl", "daemon-reload"],
          ["systemctl", "enable", "--now", "meridian-${role}.service", "meridian-${role}-health.timer"],
        ],
      )
    }),
  ]) } }
}
