"""The suite's float tolerances, and why each holds on any CPU and thread count.

Results that are equal in exact arithmetic differ in their last bits from one machine to
another: float addition is not associative, and kernels order their sums by SIMD width (AVX2,
AVX-512, NEON, with or without fused multiply-add), by thread count and by the shapes they are
given (a length-15 and a length-20 sequence are blocked differently). Each float32 operation
rounds by at most 2**-24 (6e-8) of its result; the tiny model's forward pass chains a few
hundred of them over values of about unit scale. The largest such difference measured is
1.4e-6, between a length-15 forward pass and the same positions of a padded length-20 one.

So float results are compared exactly only where the same kernels run on the same shapes in
the same process (a deterministic rerun); elsewhere with ``KERNEL``, 70 times that largest
difference (and about 10 times a worst-case bound of 20 ulps per layer over the tiny model's
depth). The model tests also show that what they guard against (a leak through attention, a
change at a real position) moves the same values by more than ``EFFECT``, a hundred times
``KERNEL``. Where losses of two runs are compared (resume), the claim about the data is made
exactly, on the sample keys of every step; the losses then check weights, optimizer and
schedule. bf16 (a GPU's precision) rounds to 2**-8 and would need tolerances near 3e-2; no
test here runs in bf16.
"""

from __future__ import annotations

KERNEL = {"rtol": 1e-4, "atol": 1e-4}  # the same values through different kernels or shapes
EFFECT = 1e-2  # the least change a real difference (not rounding) makes in these tests


def close(a: float, b: float) -> bool:
    """``a`` and ``b`` agree within ``KERNEL``."""
    return abs(a - b) <= KERNEL["atol"] + KERNEL["rtol"] * abs(b)
