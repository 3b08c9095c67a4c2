"""``flushwatch simulate``: an agent-based market whose leverage flush emerges, rendered as venue frames with
ground-truth stage labels. ``model`` runs the market, ``labels`` derives the true stages, ``frames`` renders
Binance and Bybit messages, ``simulation`` ties them together and serves them to the fake venues, ``output``
writes a recording ``flushwatch replay`` reads, ``cli`` is the command."""

from flushwatch.simulator.labels import Label
from flushwatch.simulator.model import SimConfig
from flushwatch.simulator.simulation import SimulatedBinance, SimulatedBybit, Simulation

__all__ = ["Label", "SimConfig", "SimulatedBinance", "SimulatedBybit", "Simulation"]
