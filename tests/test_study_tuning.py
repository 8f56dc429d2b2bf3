"""study/tuning.py: tuning curves (Dodge et al. 2019) through opda, checked against the closed form and
small cases by hand; the implied test NLL weights by hand."""
import math
from itertools import product

import numpy as np
import pytest

from gatedrnn.study.tuning import best_of_n_weights, tuning_curve


def test_best_of_n_weights_by_enumeration():
    """P(the k-th best of N is the best of n draws with replacement), by enumerating all N^n draws."""
    for N, n in ((3, 1), (3, 2), (4, 3)):
        counts = np.zeros(N)
        for draw in product(range(N), repeat=n):
            counts[min(draw)] += 1           # index 0 = the best (smallest) value
        assert best_of_n_weights(N, n) == pytest.approx(counts / N ** n)


def test_expected_best_valid_and_implied_test_by_hand():
    # valid NLLs (unsorted on purpose) and their candidates' test NLLs
    valid, test = [9.0, 8.0, 10.0], [9.5, 8.7, 10.1]
    rows = tuning_curve(valid, test, a=0.0, b=12.0)
    assert [r["n"] for r in rows] == [1, 2, 3]
    # n = 1: the mean; n = 2: E[min of 2 draws] = (5·8 + 3·9 + 1·10) / 9 — weights (1 − (2/3)^2, (2/3)^2 − (1/3)^2, (1/3)^2)
    assert rows[0]["expected_best_valid"] == pytest.approx(9.0)
    assert rows[1]["expected_best_valid"] == pytest.approx((5 * 8 + 3 * 9 + 1 * 10) / 9)
    assert rows[2]["expected_best_valid"] == pytest.approx((19 * 8 + 7 * 9 + 1 * 10) / 27)
    # the implied test NLL: the chosen (lowest-valid) candidate's test NLL, same weights
    assert rows[0]["implied_test"] == pytest.approx((9.5 + 8.7 + 10.1) / 3)
    assert rows[1]["implied_test"] == pytest.approx((5 * 8.7 + 3 * 9.5 + 1 * 10.1) / 9)
    # the band brackets the estimate and lies within the support
    for r in rows:
        assert 0.0 <= r["band_low"] <= r["expected_best_valid"] <= r["band_high"] <= 12.0


def test_a_candidate_without_test_nll_leaves_the_implied_test_out_where_it_can_be_chosen():
    """A halving study's cut candidate (no test NLL) that is not the best can still be the best of a draw
    that misses the better ones: no implied test for n < N either, since every k has positive weight."""
    rows = tuning_curve([8.0, 9.0], [8.5, None], a=0.0, b=12.0)
    assert all(r["implied_test"] is None for r in rows)
    rows = tuning_curve([8.0], [8.5])
    assert rows[0]["implied_test"] == 8.5 and math.isnan(rows[0]["band_low"])
