"""Tooling for the SQL layer in sql/: apply, lint, lookup checks, shell, Materialize smoke."""
