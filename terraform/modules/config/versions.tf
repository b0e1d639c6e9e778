# Provider-free on purpose: this module only turns variables into text (each
# role's TOML, systemd units, cloud-init), so it initialises, validates and is
# tested offline, and every cloud's modules sit on top of the same output.
terraform {
  # 1.9: variable validations that refer to other variables (default_region,
  # migrate_region).
  required_version = ">= 1.9"
}
