"""Assemblers, one module per service type."""
