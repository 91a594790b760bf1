"""bidense.profile (see package docs)."""
