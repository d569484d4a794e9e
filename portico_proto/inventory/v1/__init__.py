"""Generated from proto/portico/inventory/v1/inventory.proto (see `portico_proto`)."""
