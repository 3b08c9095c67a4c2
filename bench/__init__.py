"""``python -m bench``: flushwatch's benchmarks. Each prints JSON lines ``{"name", "value", "unit"}``."""
