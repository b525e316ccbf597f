"""sipha's tests: sip."""
