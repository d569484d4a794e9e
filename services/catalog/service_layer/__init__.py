"""Use cases and the unit of work: what the catalog does, independent of HTTP."""
