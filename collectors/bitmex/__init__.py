"""BitMEX realtime: perpetuals' trades, top-25 books, mark/index/funding/open interest and liquidations."""

from collectors.bitmex.spec import SPEC

__all__ = ["SPEC"]
