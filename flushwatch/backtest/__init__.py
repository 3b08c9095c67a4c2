"""``flushwatch backtest``: the detector over bars, recordings or simulator runs, scored and reported.

Bars become events (``feed``) and go through the same ``detector.engine.Detector`` as a live run or a replay
(``runner``); the stage changes become episodes, scored against known or labelled events and against two
simple liquidation baselines (``episodes``, ``baselines``, ``accuracy``); ``report`` writes the JSON summary,
the PNG chart and the text table; ``cli`` is the command.
"""
