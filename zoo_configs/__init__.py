"""Zoo entries: one YAML per preset, installed with the package as `tfvae.zoo_configs`."""
