"""oasis_lib (exports restored once all modules land)."""
