"""The simulated tape as venue messages: Binance USDⓈ-M streams and Bybit v5 linear topics.

Each venue shows its share of the market (``SimConfig.binance_share``): the orders routed to it, the
positions held on it (its open interest and liquidations) and its share of the book. Every taker order is
one trade at its average price. Per simulated second:

* Binance: ``aggTrade`` per order; ``markPriceUpdate`` (``p`` mark, ``i`` index, ``r`` funding per 8 h);
  a 20-level ``depthUpdate`` once per second (on the ``@depth20@100ms`` stream name, at the model's 1-s
  step); ``forceOrder`` on ``<sym>@forceOrder`` and ``!forceOrder@arr`` capped as Binance does: the latest
  liquidation of each 1000-ms window, pushed at the window's end (``p`` bankruptcy, ``ap`` fill price).
  Open interest is a REST answer (``open_interest_body``), as the fake venue and the poller have it.
* Bybit: ``publicTrade`` per order; ``orderbook.50`` snapshot, then one delta per second; ``tickers``
  snapshot, then deltas of the fields that changed; ``allLiquidation`` with EVERY liquidation, in 500-ms
  batches (``S`` = ``Buy``: a long was liquidated; ``p`` bankruptcy price).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Final

import msgspec
import numpy as np

from flushwatch.simulator.model import BINANCE, BOOK_LEVELS, BYBIT, FORCED, VENUES, Run

Frame = tuple[int, str, str, str]
"""``(push time ms, venue, stream or topic, payload text)``."""

FUNDING_INTERVAL_MS: Final = 8 * 3600 * 1000
OPEN_INTEREST_PATH: Final = "/fapi/v1/openInterest"
_BINANCE_LEVELS: Final = 20
_LIQ_BATCH_MS: Final = 500
_encode = msgspec.json.Encoder().encode


class _Venue:
    """What both renderers share: the run, this venue's orders by second, number formats."""

    def __init__(self, run: Run, venue: int, t0_ms: int) -> None:
        config = run.config
        self.run, self.venue, self.t0_ms = run, venue, t0_ms
        self.symbol = config.symbol
        self.share = config.binance_share if venue == BINANCE else 1.0 - config.binance_share
        mine = np.flatnonzero(run.venue == venue)
        order = np.lexsort((run.offset_ms[mine], run.order_s[mine]))
        self.orders = mine[order]
        self.at = np.searchsorted(run.order_s[self.orders], np.arange(len(run.mid) + 1))
        self.step = 10.0 ** -config.qty_decimals
        self.px, self.qty = f"%.{config.price_decimals}f", f"%.{config.qty_decimals}f"

    def orders_of(self, k: int) -> np.ndarray:
        """This venue's orders of second ``k``, in time order."""
        return self.orders[self.at[k]:self.at[k + 1]]

    def quantity(self, usd: np.ndarray, price: np.ndarray) -> list[str]:
        return [self.qty % q for q in np.maximum(np.abs(usd) / price, self.step).tolist()]

    def levels(self, k: int, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        """``[[price, size], ...]`` of the best ``depth`` levels per side, best first."""
        run = self.run
        b = int(run.boundary[k])
        sides = []
        for side, levels in ((0, b - np.arange(depth)), (1, b + 1 + np.arange(depth))):
            prices = run.config.level_price(levels)
            sizes = np.maximum(run.book[k, side, :depth] * self.share / prices, self.step)
            sides.append([[self.px % p, self.qty % q] for p, q in zip(prices.tolist(), sizes.tolist(), strict=True)])
        return sides[0], sides[1]

    def liquidations(self, k: int) -> np.ndarray:
        orders = self.orders_of(k)
        return orders[self.run.kind[orders] == FORCED]


class BinanceFrames(_Venue):
    def __init__(self, run: Run, t0_ms: int) -> None:
        super().__init__(run, BINANCE, t0_ms)
        sym, px, qty, lower = self.symbol, self.px, self.qty, self.symbol.lower()
        self.streams = (f"{lower}@aggTrade", f"{lower}@markPrice@1s", f"{lower}@depth20@100ms",
                        f"{lower}@forceOrder", "!forceOrder@arr")
        self._trade = (f'{{"e":"aggTrade","E":%d,"a":%d,"s":"{sym}","p":"{px}","q":"%s","f":%d,"l":%d,'
                       f'"T":%d,"m":%s}}')
        self._mark = (f'{{"e":"markPriceUpdate","E":%d,"s":"{sym}","p":"%.8f","i":"%.8f","P":"%.8f",'
                      f'"r":"%.8f","T":%d}}')
        self._liq = (f'{{"e":"forceOrder","E":%d,"o":{{"s":"{sym}","S":"%s","o":"LIMIT","f":"IOC","q":"%s",'
                     f'"p":"{px}","ap":"{px}","X":"FILLED","l":"%s","z":"%s","T":%d}}}}')
        self._qty_fmt = qty
        self._next_id = 1

    def second(self, k: int) -> list[Frame]:
        run, base = self.run, self.t0_ms + k * 1000
        orders = self.orders_of(k)
        out: list[Frame] = []
        times = (base + run.offset_ms[orders]).tolist()
        for t, price, qty, usd in zip(times, run.price[orders].tolist(), self.quantity(run.usd[orders],
                                      run.price[orders]), run.usd[orders].tolist(), strict=True):
            a = self._next_id
            self._next_id += 1
            out.append((t + 2, "binance", self.streams[0],
                        self._trade % (t + 2, a, price, qty, a, a, t, "true" if usd < 0 else "false")))
        end = base + 999
        index = float(run.index[k])
        next_funding = (end // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS
        out.append((end, "binance", self.streams[1], self._mark % (
            end, float(run.mid[k]), index, index, float(run.funding[k]), next_funding)))
        bids, asks = self.levels(k, _BINANCE_LEVELS)
        out.append((end, "binance", self.streams[2], _encode(
            {"e": "depthUpdate", "E": end, "T": end - 4, "s": self.symbol, "U": k * 10 + 1, "u": k * 10 + 10,
             "pu": k * 10, "b": bids, "a": asks}).decode()))
        forced = self.liquidations(k)
        if len(forced):
            last = forced[-1]  # the one order of the window Binance pushes
            qty = self.quantity(run.usd[last:last + 1], run.price[last:last + 1])[0]
            payload = self._liq % (base + 1000, "SELL" if run.usd[last] < 0 else "BUY", qty,
                                   float(run.positions.bankruptcy(run.position[last:last + 1])[0]),
                                   float(run.price[last]), qty, qty, base + int(run.offset_ms[last]))
            out += [(base + 1000, "binance", stream, payload) for stream in self.streams[3:]]
        return out

    def open_interest_body(self, k: int) -> str:
        """The ``GET /fapi/v1/openInterest`` answer at the end of second ``k``."""
        text = self._qty_fmt % float(self.run.oi[k, BINANCE])
        return _encode({"openInterest": text, "symbol": self.symbol, "time": self.t0_ms + k * 1000 + 999}).decode()


class BybitFrames(_Venue):
    """Stateful: the book and ticker deltas follow from the previous second, so seconds go in order."""

    def __init__(self, run: Run, t0_ms: int) -> None:
        super().__init__(run, BYBIT, t0_ms)
        sym = self.symbol
        self.topics = (f"publicTrade.{sym}", f"orderbook.{BOOK_LEVELS}.{sym}", f"tickers.{sym}",
                       f"allLiquidation.{sym}")
        self._trade = (f'{{"topic":"{self.topics[0]}","type":"snapshot","ts":%d,"data":[{{"T":%d,"s":"{sym}",'
                       f'"S":"%s","v":"%s","p":"{self.px}","L":"%s","i":"%s","BT":false,"RPI":false,"seq":%d}}]}}')
        self._trades = 0
        self._book: tuple[dict[str, str], dict[str, str]] = ({}, {})
        self._ticker: dict[str, str] = {}
        self._last_price = 0.0

    def second(self, k: int) -> list[Frame]:
        run, base = self.run, self.t0_ms + k * 1000
        orders = self.orders_of(k)
        out: list[Frame] = []
        for t, price, qty, usd in zip((base + run.offset_ms[orders]).tolist(), run.price[orders].tolist(),
                                      self.quantity(run.usd[orders], run.price[orders]), run.usd[orders].tolist(),
                                      strict=True):
            self._trades += 1
            tick = "PlusTick" if price >= self._last_price else "MinusTick"
            self._last_price = price
            out.append((t + 1, "bybit", self.topics[0], self._trade % (
                t + 1, t, "Buy" if usd > 0 else "Sell", qty, price, tick, uuid.UUID(int=self._trades),
                1_000_000 + self._trades)))
        end = base + 999
        out.append((end, "bybit", self.topics[1], self._book_frame(k, end)))
        out.append((end, "bybit", self.topics[2], self._ticker_frame(k, end)))
        forced = self.liquidations(k)
        for half in (0, 1):
            batch = forced[(run.offset_ms[forced] >= half * _LIQ_BATCH_MS)
                           & (run.offset_ms[forced] < (half + 1) * _LIQ_BATCH_MS)]
            if len(batch):
                bankrupt = run.positions.bankruptcy(run.position[batch])
                items = [{"T": base + int(o), "s": self.symbol, "S": "Buy" if u < 0 else "Sell", "v": q,
                          "p": self.px % p} for o, u, q, p in zip(
                    run.offset_ms[batch].tolist(), run.usd[batch].tolist(),
                    self.quantity(run.usd[batch], run.price[batch]), bankrupt.tolist(), strict=True)]
                ts = base + (half + 1) * _LIQ_BATCH_MS
                out.append((ts, "bybit", self.topics[3], _encode(
                    {"topic": self.topics[3], "type": "snapshot", "ts": ts, "data": items}).decode()))
        return out

    def _book_frame(self, k: int, end: int) -> str:
        bids, asks = self.levels(k, BOOK_LEVELS)
        new = (dict(bids), dict(asks))
        kind, changes = "snapshot", [bids, asks]
        if k > 0:  # what changed, and a size of 0 for every level gone from the top 50
            kind = "delta"
            changes = [[[p, q] for p, q in now.items() if then.get(p) != q] + [[p, "0"] for p in then if p not in now]
                       for then, now in zip(self._book, new, strict=True)]
        self._book = new
        return _encode({"topic": self.topics[1], "type": kind, "ts": end, "data": {
            "s": self.symbol, "b": changes[0], "a": changes[1], "u": k + 1, "seq": 5_000_000 + k},
            "cts": end - 1}).decode()

    def _ticker_frame(self, k: int, end: int) -> str:
        run = self.run
        mid, oi = float(run.mid[k]), float(run.oi[k, BYBIT])
        fields = {
            "symbol": self.symbol, "lastPrice": self.px % mid, "markPrice": self.px % mid,
            "indexPrice": self.px % float(run.index[k]), "fundingRate": f"{float(run.funding[k]):.8f}",
            "fundingIntervalHour": "8", "nextFundingTime": str((end // FUNDING_INTERVAL_MS + 1) * FUNDING_INTERVAL_MS),
            "openInterest": self.qty % (2 * oi), "openInterestValue": f"{2 * oi * mid:.2f}",
            "singleOpenInterest": self.qty % oi, "singleOpenInterestValue": f"{oi * mid:.2f}",
        }
        kind = "snapshot" if k == 0 else "delta"
        data = fields if k == 0 else {"symbol": self.symbol} | {
            key: value for key, value in fields.items() if self._ticker.get(key) != value}
        self._ticker = fields
        return _encode({"topic": self.topics[2], "type": kind, "data": data, "cs": 9_000_000 + k,
                        "ts": end}).decode()


def render(run: Run, t0_ms: int, venues: tuple[str, ...] = VENUES) -> Iterator[list[Frame]]:
    """Every second's frames of ``venues``, in push order, one list per second."""
    renderers: list[BinanceFrames | BybitFrames] = []
    if "binance" in venues:
        renderers.append(BinanceFrames(run, t0_ms))
    if "bybit" in venues:
        renderers.append(BybitFrames(run, t0_ms))
    for k in range(len(run.mid)):
        frames = [f for r in renderers for f in r.second(k)]
        frames.sort(key=lambda f: f[0])
        yield frames
