"""sealbox: Linux sandboxes whose only way out is a secret-injecting egress gateway."""
