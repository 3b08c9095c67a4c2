"""Bybit v5 linear (USDT/USDC perpetuals): ``SPEC`` for the generic venue collector."""

from collectors.bybit.spec import SPEC

__all__ = ["SPEC"]
