"""Identity's rules, free of Flask, SQLAlchemy and Authlib."""
