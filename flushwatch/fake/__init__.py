"""A fake Binance USDⓈ-M venue for tests, demos and load runs on machines that cannot reach the exchange.

``FakeBinance`` speaks the real protocol (``/market`` and ``/public`` stream endpoints, live
SUBSCRIBE, REST open interest) so the collectors talk to it or to ``fstream.binance.com`` by changing
base URLs only. It serves a ``Scenario`` (a scripted flush with ground truth) or a ``Recording``::

    async with FakeBinance() as fake:
        scenario = Scenario("flush", seed=1, speed=40.0)
        fake.attach(scenario)
        settings = BinanceSettings(market_url=fake.market_url, public_url=fake.public_url,
                                   rest_url=fake.rest_url)
        ...
        scenario.phase_at("BTC", scenario.now_s())   # ground truth: Phase(name="cascade", stage=4, ...)
"""

from flushwatch.fake.binance import Frame, FrameSource
from flushwatch.fake.recording import Recording
from flushwatch.fake.scenario import SCRIPTS, AssetScript, Phase, Scenario, Segment
from flushwatch.fake.server import Connection, Counts, FakeBinance, Sent

__all__ = [
    "SCRIPTS",
    "AssetScript",
    "Connection",
    "Counts",
    "FakeBinance",
    "Frame",
    "FrameSource",
    "Phase",
    "Recording",
    "Scenario",
    "Segment",
    "Sent",
]
