"""Authentication: passwords, one-time codes, certificates, OIDC tokens, devices."""
