"""The catalog service: products, their prices and categories (Flask, SQLAlchemy 2)."""
