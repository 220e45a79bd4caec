"""Stage factory, one assembler per service type, one module per step type."""
