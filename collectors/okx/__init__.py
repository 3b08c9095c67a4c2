"""OKX v5 public: swaps' trades, 5-level books, mark and index, funding, open interest and liquidations."""

from collectors.okx.spec import SPEC

__all__ = ["SPEC"]
