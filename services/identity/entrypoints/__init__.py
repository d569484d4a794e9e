"""Identity's thin web layer: the OAuth endpoints, the login + consent page, the users API."""
