"""Use cases (place, get, list orders) and the saga runner and driver."""
