"""Plumbing of the review workbench: embedded PostgreSQL, findings registry, evidence matrix, review build."""
