"""Hyperliquid perpetuals: trades, 20-level books, funding, mark, oracle and open interest; no liquidations."""

from collectors.hyperliquid.spec import SPEC

__all__ = ["SPEC"]
