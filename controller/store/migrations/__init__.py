"""Alembic migrations for the controller store; run through ``Store.migrate``."""
