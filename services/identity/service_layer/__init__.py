"""Identity's use cases: register and authenticate users, set up storage and dev clients."""
