variable "deployment" {
  description = "Name of this deployment, tagged on every resource."
  type        = string
  default     = "meridian"
}

variable "zone_name" {
  description = "A Route 53 public hosted zone you own, e.g. example.com."
  type        = string
}

variable "public_name" {
  description = "The one global name clients use, inside zone_name, e.g. rtc.example.com."
  type        = string
}

variable "secrets" {
  description = "api_key, api_secret (>= 16 characters) and turn_secret (>= 16): generate with `openssl rand -hex 32`."
  type = object({
    api_key     = string
    api_secret  = string
    turn_secret = string
  })
  sensitive = true
}

variable "database_password" {
  description = "Password of the database's meridian user (>= 16 characters of A-Z a-z 0-9 _ . ~ -)."
  type        = string
  sensitive   = true
}

variable "release" {
  description = "The meridian release to run: version, url of the Linux binary (\"{version}\" is filled in), sha256."
  type = object({
    version = string
    url     = string
    sha256  = optional(string)
  })
}

variable "geoip_db_url" {
  description = "Where the gateways download a GeoLite2-City.mmdb from (e.g. a presigned S3 URL); null sends every client to the default region."
  type        = string
  default     = null
}

variable "turn_tls_parameters" {
  description = "SSM SecureString parameter names, in every region, of the PEM chain and key for *.turn.<public_name>."
  type = object({
    cert = string
    key  = string
  })
  default = {
    cert = "/meridian/turn/fullchain.pem"
    key  = "/meridian/turn/privkey.pem"
  }
}

variable "monitoring_cidrs" {
  description = "CIDRs of the Prometheus scrapers, admitted to the metrics ports."
  type        = list(string)
  default     = []
}

variable "scaling" {
  description = "How the SFU groups scale: metric \"cpu\" (target in percent) or \"participants\" (target per node)."
  type = object({
    metric = optional(string, "cpu")
    target = optional(number, 60)
  })
  default = {}
}

variable "sfu_drain_grace" {
  description = "Seconds a draining SFU node keeps its rooms ([sfu] drain_grace); scale-in waits for it."
  type        = number
  default     = 300
}
