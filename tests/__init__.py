"""sipha's tests: unit, property and integration tests, mirroring src/."""
