"""Alembic's entry point for this service: the shared runner in `chassis.migrations`."""

from chassis.migrations import run_env

run_env()
