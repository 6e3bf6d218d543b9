"""The sandbox's network namespace: loopback only, every connection forced to the gateway."""
