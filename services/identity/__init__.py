"""Identity: the OAuth 2 authorization server (Authlib), users and the signing keys' JWKS."""
