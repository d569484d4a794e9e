"""`python -m tests.bench`: the gateway measured against nginx and other proxies with wrk."""
