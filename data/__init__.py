"""Bundled default data: a generator of deterministic synthetic interactions."""
