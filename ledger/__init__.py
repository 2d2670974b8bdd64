"""Glucohub ledger: a standalone library (imports nothing else from the project)."""
