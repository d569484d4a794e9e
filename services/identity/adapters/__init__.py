"""Identity's adapters: the SQLAlchemy tables, the key file, the secret file, Authlib glue."""
