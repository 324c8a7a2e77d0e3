"""The one definition of the critical batch size (suite.critical)."""

import math

import pytest

from suite.critical import critical_batch_size


def test_piecewise_power_law_crosses_where_log_log_interpolation_says():
    sizes = [1, 2, 4, 8, 16]
    # perfect scaling to B=4, then 12 steps at 8 (efficiency 2/3) and 12 at 16 (1/3)
    crit = critical_batch_size(sizes, [64, 32, 16, 12, 12])
    excess8, excess16 = math.log2(8 * 12 / 64), math.log2(16 * 12 / 64)
    assert crit == pytest.approx(2 ** (3 + (1 - excess8) / (excess16 - excess8)))
    assert critical_batch_size(sizes, [64, 32, 16, 16, 16]) == pytest.approx(8)  # exactly 2x at B=8


def test_smooth_curve_with_known_answer():
    # S(b) = A (1/b + 1/K): efficiency (1 + b0/K) / (1 + b/K) is 1/2 at b = K + 2 b0
    K, b0 = 1000.0, 1.0
    sizes = [b0 * 2 ** (k / 8) for k in range(8 * 16)]
    crit = critical_batch_size(sizes, [1e6 * (1 / b + 1 / K) for b in sizes])
    assert crit == pytest.approx(K + 2 * b0, rel=2e-3)


def test_beyond_range_undefined_and_unreached():
    assert critical_batch_size([1, 2, 4], [40, 20, 10]) == math.inf  # perfect scaling throughout
    assert critical_batch_size([1, 2], [math.inf, 5]) is None  # smallest never reached the target
    assert critical_batch_size([], []) is None
    assert critical_batch_size([1, 2, 4], [40, 20, math.inf]) == pytest.approx(2)  # 4 never reached it
    assert critical_batch_size([1, 2, 4], [40, 20, 20], efficiency=0.25) == math.inf
    with pytest.raises(ValueError, match="increasing"):
        critical_batch_size([2, 1], [1, 1])
