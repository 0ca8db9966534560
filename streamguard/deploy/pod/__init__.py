"""What runs inside a flow pod (stdlib, pydantic-settings and bytewax only)."""
