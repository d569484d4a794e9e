"""Generated from proto/portico/inventory/ (see `portico_proto`)."""
