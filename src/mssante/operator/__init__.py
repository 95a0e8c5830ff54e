"""The operator's side of the trust space."""
