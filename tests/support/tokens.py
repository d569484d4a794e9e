"""The tests' token issuer; it lives in `contracts.tokens` (packaged code never imports tests)."""

from contracts.tokens import TestIssuer

__all__ = ["TestIssuer"]
