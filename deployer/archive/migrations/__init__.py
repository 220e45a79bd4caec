"""Alembic migrations of the archive, shipped inside the package (an installed wheel runs
them on first use: deployer/archive/db.py)."""
