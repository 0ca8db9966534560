"""The embedded local stack (broker, PostgreSQL, object store) and running flows on it."""
