"""Use cases: applying events to the read models, catching up from the feed, and the queries."""
