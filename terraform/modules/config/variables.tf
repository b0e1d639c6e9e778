variable "regions" {
  description = <<-EOT
    The regions, in routing order (the first is the default region unless
    default_region says otherwise). Per region:
    - id: region id, e.g. "eu-west" ([sfu] region; lower case, digits, '-').
    - latitude, longitude: the region's position in degrees, for
      nearest-region routing ([sfu] latitude/longitude).
    - sfu: nodes (the node count at rest), max_nodes (what scaling may reach),
      size (the cloud's instance type; null lets the cloud module choose).
    - turn: nodes (TURN relays, each with its own public address) and size.
    - turn_host: the DNS name clients reach the region's relays by (default
      "<id>.<turn_domain>").
    - bind_address: the address every listener of the region binds to; the
      default 0.0.0.0 leaves the per-node keys (sfu.node_id, sfu.advertise,
      turn.relay_ip) to the platform hook (see the platform_hook output). A
      concrete address (tests on loopback) makes the TOML complete on its own.
    - turn_allow_peers: CIDRs the relay relays to despite its block list: the
      region's SFU nodes' private addresses ([turn] allow_peers).
  EOT
  type = list(object({
    id        = string
    latitude  = number
    longitude = number
    sfu = optional(object({
      nodes     = optional(number, 2)
      max_nodes = optional(number, 8)
      size      = optional(string)
    }), {})
    turn = optional(object({
      nodes = optional(number, 1)
      size  = optional(string)
    }), {})
    turn_host        = optional(string)
    bind_address     = optional(string, "0.0.0.0")
    turn_allow_peers = optional(list(string), [])
  }))

  validation {
    condition     = length(var.regions) > 0
    error_message = "regions: give at least one region."
  }
  validation {
    condition     = alltrue([for r in var.regions : can(regex("^[a-z][a-z0-9-]{0,31}$", r.id))])
    error_message = "regions[*].id: lower-case letters, digits and '-', starting with a letter, at most 32 characters."
  }
  validation {
    condition     = length(distinct([for r in var.regions : r.id])) == length(var.regions)
    error_message = "regions[*].id: each region id once."
  }
  validation {
    condition     = alltrue([for r in var.regions : r.latitude >= -90 && r.latitude <= 90 && r.longitude >= -180 && r.longitude <= 180])
    error_message = "regions[*]: latitude in -90..90 and longitude in -180..180 degrees."
  }
  validation {
    condition = alltrue([for r in var.regions :
      r.sfu.nodes >= 1 && r.sfu.max_nodes >= r.sfu.nodes && floor(r.sfu.nodes) == r.sfu.nodes && floor(r.sfu.max_nodes) == r.sfu.max_nodes
    ])
    error_message = "regions[*].sfu: nodes is a whole number >= 1 and max_nodes >= nodes."
  }
  validation {
    condition     = alltrue([for r in var.regions : r.turn.nodes >= 1 && floor(r.turn.nodes) == r.turn.nodes])
    error_message = "regions[*].turn.nodes: a whole number >= 1 (the SFU hands out the region's relay in every join)."
  }
  validation {
    condition     = alltrue([for r in var.regions : can(cidrhost("${r.bind_address}/32", 0)) || can(cidrhost("${r.bind_address}/128", 0))])
    error_message = "regions[*].bind_address: an IP address (0.0.0.0 for every interface)."
  }
  validation {
    condition     = alltrue(flatten([for r in var.regions : [for c in r.turn_allow_peers : can(cidrhost(c, 0))]]))
    error_message = "regions[*].turn_allow_peers: CIDRs, e.g. 10.1.0.0/16."
  }
}

variable "default_region" {
  description = "Region for clients that cannot be located ([gateway] default_region). Default: the first of regions."
  type        = string
  default     = null

  validation {
    condition     = var.default_region == null || contains([for r in var.regions : r.id], coalesce(var.default_region, "-"))
    error_message = "default_region: must be the id of one of regions."
  }
}

variable "ports" {
  description = <<-EOT
    Every port the deployment uses; the `ports` output repeats them and every
    other module opens, listens and health-checks only these.
    - gateway_https: the public HTTPS/WSS port, at the load balancer (443).
    - gateway_listen: the gateway process, behind the load balancer (7880).
    - sfu_signal: an SFU node's signal port, reached by gateways only (7881).
    - sfu_metrics: an SFU node's /metrics and /healthz (9101).
    - turn: TURN over UDP and TCP (3478).
    - turn_tls: TURN over TLS (5349).
    - turn_metrics: a relay's /metrics and /healthz (9102).
    - sfu_udp: an SFU node's one UDP port for every peer connection
      (LiveKit's rtc.udp_port; 7882).
    - sfu_tcp: an SFU node's one TCP port for ICE over TCP, for clients
      whose network lets no UDP through (LiveKit's rtc.tcp_port; 7883,
      since 7881 is the signal port here).
    - postgres: the database (5432).
  EOT
  type = object({
    gateway_https  = optional(number, 443)
    gateway_listen = optional(number, 7880)
    sfu_signal     = optional(number, 7881)
    sfu_metrics    = optional(number, 9101)
    sfu_udp        = optional(number, 7882)
    sfu_tcp        = optional(number, 7883)
    turn           = optional(number, 3478)
    turn_tls       = optional(number, 5349)
    turn_metrics   = optional(number, 9102)
    postgres       = optional(number, 5432)
  })
  default = {}

  validation {
    condition     = alltrue([for k, p in var.ports : p >= 1 && p <= 65535 && floor(p) == p])
    error_message = "ports: whole numbers in 1..65535."
  }
  validation {
    condition     = length(distinct(values(var.ports))) == length(var.ports)
    error_message = "ports: every port distinct."
  }
}

variable "secrets" {
  description = <<-EOT
    - api_key, api_secret: the API key pair that signs join tokens ([api] key,
      secret; the secret at least 16 characters).
    - turn_secret: the TURN REST API secret the SFU nodes and the relays share
      ([sfu] turn_secret, [turn] secret; at least 16 characters).
  EOT
  type = object({
    api_key     = string
    api_secret  = string
    turn_secret = string
  })
  sensitive = true

  validation {
    condition     = length(var.secrets.api_key) > 0 && length(var.secrets.api_secret) >= 16
    error_message = "secrets: api_key non-empty and api_secret at least 16 characters (the binary refuses shorter)."
  }
  validation {
    condition     = length(var.secrets.turn_secret) >= 16
    error_message = "secrets.turn_secret: at least 16 characters."
  }
}

variable "database_url" {
  description = "Postgres URL the gateways and SFU nodes share ([database] url), e.g. postgres://meridian:PASSWORD@db.internal:5432/meridian."
  type        = string
  sensitive   = true

  validation {
    condition     = can(regex("^postgres(ql)?://[^'\\s]+$", var.database_url))
    error_message = "database_url: a postgres:// or postgresql:// URL, without quotes or whitespace."
  }
}

variable "gateway" {
  description = <<-EOT
    The gateway tier.
    - public_name: the one global name clients use, e.g. rtc.example.com.
    - public_url: the URL handed out with minted tokens ([gateway] public_url).
      Default wss://<public_name>, with :<ports.gateway_https> unless 443.
    - bind_address: the gateway's listen address ([gateway] listen, with
      ports.gateway_listen). Default 0.0.0.0.
    - trusted_proxies: CIDRs of the load balancers whose X-Forwarded-For is
      believed ([gateway] trusted_proxies): the subnets the load balancer
      lives in.
    - max_connections: [gateway] max_connections (default 10000).
    - geoip_db_url: where cloud-init downloads a MaxMind-format City database
      from (a GeoLite2-City.mmdb); without it every client goes to the default
      region.
    TLS terminates at the load balancer, so the gateway serves plain HTTP
    ([gateway] plain_http = true).
  EOT
  type = object({
    public_name     = string
    public_url      = optional(string)
    bind_address    = optional(string, "0.0.0.0")
    trusted_proxies = optional(list(string), [])
    max_connections = optional(number, 10000)
    geoip_db_url    = optional(string)
  })

  validation {
    condition     = can(regex("^[a-z0-9]([a-z0-9-]*[a-z0-9])?(\\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)+$", var.gateway.public_name))
    error_message = "gateway.public_name: a DNS name, e.g. rtc.example.com."
  }
  validation {
    condition     = var.gateway.public_url == null || can(regex("^wss?://", coalesce(var.gateway.public_url, "-")))
    error_message = "gateway.public_url: a ws:// or wss:// URL."
  }
  validation {
    condition     = alltrue([for c in var.gateway.trusted_proxies : can(cidrhost(c, 0))])
    error_message = "gateway.trusted_proxies: CIDRs, e.g. 10.0.0.0/8."
  }
  validation {
    condition     = var.gateway.max_connections >= 1
    error_message = "gateway.max_connections: at least 1."
  }
}

variable "turn_domain" {
  description = "Domain under which each region's relays get a name, <region>.<turn_domain> (one wildcard certificate covers them all). Default turn.<gateway.public_name>."
  type        = string
  default     = null
}

variable "release" {
  description = <<-EOT
    The meridian release binary every node installs.
    - version: e.g. "0.4.0"; "{version}" in url is replaced by it.
    - url: where the Linux binary (not an archive) is downloaded from.
    - sha256: its SHA-256, checked before install (recommended).
  EOT
  type = object({
    version = string
    url     = string
    sha256  = optional(string)
  })

  validation {
    condition     = can(regex("^https?://", var.release.url))
    error_message = "release.url: an http(s) URL."
  }
  validation {
    condition     = var.release.sha256 == null || can(regex("^[0-9a-f]{64}$", coalesce(var.release.sha256, "-")))
    error_message = "release.sha256: 64 lower-case hex digits."
  }
}

variable "sfu_settings" {
  description = <<-EOT
    Settings every SFU node shares ([sfu] in docs/meridian.example.toml).
    - capacity: participants before a node counts as full (500).
    - drain_grace: seconds a node told to stop (SIGTERM) waits for its rooms
      to empty (30). The unit's TimeoutStopSec and the cloud's scale-in wait
      are derived from it.
    - include_loopback: offer loopback ICE candidates (tests only; false).
  EOT
  type = object({
    capacity         = optional(number, 500)
    drain_grace      = optional(number, 30)
    include_loopback = optional(bool, false)
  })
  default = {}

  validation {
    condition     = var.sfu_settings.capacity >= 1 && var.sfu_settings.drain_grace >= 0 && var.sfu_settings.drain_grace <= 3600
    error_message = "sfu_settings: capacity >= 1, drain_grace in 0..3600 seconds."
  }
}

variable "turn_settings" {
  description = <<-EOT
    Settings every TURN relay shares ([turn] in docs/meridian.example.toml).
    - realm (meridian), recv_buffer_bytes (4194304), user_quota (32),
      total_quota (20000), bandwidth_cap in bits/s per allocation and
      direction, 0 for none (20000000), deny_peers (CIDRs, []).
    - tls_cert, tls_key: paths of the PEM chain and key for TURN over TLS on
      the host; the cloud module puts them there (they are not secrets of this
      module).
  EOT
  type = object({
    realm             = optional(string, "meridian")
    recv_buffer_bytes = optional(number, 4194304)
    user_quota        = optional(number, 32)
    total_quota       = optional(number, 20000)
    bandwidth_cap     = optional(number, 20000000)
    deny_peers        = optional(list(string), [])
    tls_cert          = optional(string, "/etc/meridian/tls/turn/fullchain.pem")
    tls_key           = optional(string, "/etc/meridian/tls/turn/privkey.pem")
  })
  default = {}

  validation {
    condition     = var.turn_settings.recv_buffer_bytes >= 65536 && var.turn_settings.user_quota >= 1 && var.turn_settings.total_quota >= var.turn_settings.user_quota && var.turn_settings.bandwidth_cap >= 0
    error_message = "turn_settings: recv_buffer_bytes >= 65536, user_quota >= 1, total_quota >= user_quota, bandwidth_cap >= 0."
  }
  validation {
    condition     = alltrue([for c in var.turn_settings.deny_peers : can(cidrhost(c, 0))])
    error_message = "turn_settings.deny_peers: CIDRs."
  }
}

variable "migrate_region" {
  description = "Region whose gateways run `meridian migrate` (a oneshot unit ordered before the gateway) against database_url. Default: the default region."
  type        = string
  default     = null

  validation {
    condition     = var.migrate_region == null || contains([for r in var.regions : r.id], coalesce(var.migrate_region, "-"))
    error_message = "migrate_region: must be the id of one of regions."
  }
}

variable "environment" {
  description = "Extra environment for every role's unit, e.g. { OTEL_EXPORTER_OTLP_ENDPOINT = \"http://collector:4318\" }. Not for secrets (they belong in the TOML)."
  type        = map(string)
  default     = {}

  validation {
    condition     = alltrue([for k, v in var.environment : can(regex("^[A-Z_][A-Z0-9_]*$", k)) && !strcontains(v, "\n")])
    error_message = "environment: upper-case variable names, single-line values."
  }
}
