"""sipha's tests: ha."""
