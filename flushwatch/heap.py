"""The garbage collector in a long-running service.

CPython's full collection walks every tracked object. After start-up most of them are the imported modules'
functions, types and numba's compiled dispatchers (about 96,000 once the detector's kernels are loaded), none
of which will ever be garbage: a full collection then took 45-80 ms, paid every few seconds of a busy
detector and stalling the event loop each time. Freezing them once, when start-up is over, leaves the
collections only what the service allocates while it runs.
"""

from __future__ import annotations

import gc
import logging

log = logging.getLogger(__name__)


def freeze_startup_objects() -> int:
    """Collect once, then move every object tracked so far into the permanent generation, which collections
    never walk; returns how many objects were frozen. Call it once start-up is over (imports done, kernels
    loaded): what is frozen is never freed, so garbage made before the call must be collected first."""
    gc.collect()
    gc.freeze()
    frozen = gc.get_freeze_count()
    log.debug("froze %d start-up objects out of the garbage collector's walks", frozen)
    return frozen
