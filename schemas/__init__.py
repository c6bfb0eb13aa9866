"""Pandera schemas and the national code tables they are built from."""
