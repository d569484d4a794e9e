"""Use cases: charge and refund, each step one short database transaction."""
