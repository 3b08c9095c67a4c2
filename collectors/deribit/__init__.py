"""Deribit perpetuals (inverse BTC/ETH and linear USDC): JSON-RPC websocket, ticker/trades/book channels."""

from collectors.deribit.spec import SPEC

__all__ = ["SPEC"]
