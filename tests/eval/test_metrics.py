"""Each metric against values computed by hand."""

import math

import pytest

from pixeltext_train.evaluate.metrics import accuracy, f1, matthews, pearson, spearman

PREDICTED, ACTUAL = [1, 0, 1, 1], [1, 1, 1, 0]  # TP 2, TN 0, FP 1, FN 1


def test_accuracy():
    assert accuracy(PREDICTED, ACTUAL) == 0.5


def test_f1_of_the_positive_class():
    assert f1(PREDICTED, ACTUAL) == pytest.approx(2 / 3)  # precision 2/3, recall 2/3
    assert f1([0, 0], [1, 0]) == 0.0


def test_matthews_correlation():
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (0 - 1) / sqrt(3 * 3 * 1 * 1)
    assert matthews(PREDICTED, ACTUAL) == pytest.approx(-1 / 3)
    assert matthews([1, 1, 1], [1, 0, 1]) == 0.0  # a constant prediction: empty margin


def test_pearson():
    # x - mean = (-1, 0, 1); y - mean = (-7/3, -1/3, 8/3); cov = 5; |x| = sqrt 2; |y| = sqrt(114)/3
    assert pearson([1, 2, 3], [2, 4, 7]) == pytest.approx(15 / math.sqrt(228))


def test_spearman_with_ties():
    # ranks (1, 2.5, 2.5, 4) and (1, 3, 2, 4): covariance 4.5 over sqrt(4.5 * 5)
    assert spearman([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(22.5))
