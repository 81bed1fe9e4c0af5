"""The C heap of a process that computes on large tensors.

glibc serves allocations below its mmap threshold from the heap, and raises that threshold (up to 32 MiB) each time
a large block is freed. Tensors of a few MiB, allocated and freed in every chunk of a tiled descent, then land on
the heap and fragment it: the denoise of a photo measured 2.9 GiB over the model at 0.25 megapixels and 7.2 GiB at 1
megapixel, with an unchanging need of about 1.7 GiB. A fixed threshold sends every tensor of 4 MiB or more to its own
mapping, returned whole when freed, and the peak stays at what is needed (``reports/denoise_memory.md``).
"""

from __future__ import annotations

import ctypes
import ctypes.util

M_MMAP_THRESHOLD = -3  # mallopt's parameter number (malloc.h)
MMAP_THRESHOLD = 4 * 2**20


def fix_mmap_threshold(threshold: int = MMAP_THRESHOLD) -> bool:
    """Fix glibc's mmap threshold at ``threshold`` bytes for this process; False where the C library is not glibc."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name)
        return bool(libc.mallopt(M_MMAP_THRESHOLD, threshold))
    except (OSError, AttributeError, TypeError):  # no C library by that name, or one without mallopt (musl, macOS)
        return False
