"""numba kernels and the stage machine: stream entries in, signals out."""

from detector.kernel_cache import use_versioned_cache

use_versioned_cache()
