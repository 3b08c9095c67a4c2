"""flushwatch: a real-time leverage-flush monitor."""

__version__ = "0.1.0"
