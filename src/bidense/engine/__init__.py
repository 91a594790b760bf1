"""bidense.engine (see package docs)."""
