"""The trust-space authority: operator registry, whitelist signing and publication."""
