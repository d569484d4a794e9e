"""Tables, the SQL behind the read models, and the client of orders' history feed."""
