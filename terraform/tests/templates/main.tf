# Renders the AWS region module's platform scripts with sample values, so
# that run.sh can syntax-check them (`sh -n`) offline: the region module
# itself cannot be initialised without the AWS provider.
terraform {
  required_version = ">= 1.9"
}

locals {
  dir  = "${path.module}/../../modules/region/templates"
  imds = file("${local.dir}/imds.sh")
}

output "scripts" {
  description = "Each platform script of the region module, rendered as the module renders it."
  value = {
    "platform-boot-sfu" = templatefile("${local.dir}/platform-boot-sfu.sh.tftpl", {
      imds        = local.imds, region_id = "eu-west", pool = "meridian-eu-west-sfu", env_file = "/etc/meridian/sfu.env",
      signal_port = 7881, participants = true
    })
    "platform-boot-turn" = templatefile("${local.dir}/platform-boot-turn.sh.tftpl", {
      imds        = local.imds, cert_param = "/meridian/turn/fullchain.pem", key_param = "/meridian/turn/privkey.pem",
      cert_path   = "/etc/meridian/tls/turn/fullchain.pem", key_path = "/etc/meridian/tls/turn/privkey.pem",
      env_file    = "/etc/meridian/turn.env", hook_path = "/usr/local/lib/meridian/platform-boot",
      renew_timer = "meridian-turn-tls.timer"
    })
    "drain-watch" = templatefile("${local.dir}/drain-watch.sh.tftpl", {
      imds = local.imds, asg = "meridian-eu-west-sfu", hook = "meridian-drain"
    })
    "publish-participants" = templatefile("${local.dir}/publish-participants.sh.tftpl", {
      imds = local.imds, asg = "meridian-eu-west-sfu", metrics_port = 9101
    })
    "health-watch" = file("${path.module}/../../modules/config/templates/health-watch.sh")
  }
}
