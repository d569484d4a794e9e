"""Examples that use the gateway's public APIs (not part of the shipped packages)."""
