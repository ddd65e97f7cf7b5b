"""Small shared helpers: atomic I/O, fingerprints, logging."""
