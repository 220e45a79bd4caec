"""Step types, one module each."""
