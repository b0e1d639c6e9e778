terraform {
  required_version = ">= 1.9"
  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = ">= 5.40, < 7.0"
    }
  }

  # Keep the state remote and encrypted: it holds the API, TURN and database
  # secrets (they are in the rendered TOML). For example:
  # backend "s3" {
  #   bucket       = "example-terraform-state"
  #   key          = "meridian/three-regions.tfstate"
  #   region       = "eu-west-1"
  #   encrypt      = true
  #   use_lockfile = true
  # }
}

provider "aws" {
  alias  = "eu_west"
  region = "eu-west-1"
  default_tags {
    tags = { "meridian:deployment" = var.deployment }
  }
}

provider "aws" {
  alias  = "us_east"
  region = "us-east-1"
  default_tags {
    tags = { "meridian:deployment" = var.deployment }
  }
}

provider "aws" {
  alias  = "ap_southeast"
  region = "ap-southeast-1"
  default_tags {
    tags = { "meridian:deployment" = var.deployment }
  }
}
