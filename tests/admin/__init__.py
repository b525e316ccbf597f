"""sipha's tests: admin."""
