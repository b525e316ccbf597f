"""sipha's tests: proxy."""
