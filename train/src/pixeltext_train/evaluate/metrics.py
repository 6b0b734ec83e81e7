"""The GLUE metrics, in plain numpy: accuracy, F1, Matthews correlation, Pearson, Spearman."""

from __future__ import annotations

import numpy as np


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels))) if len(labels) else 0.0


def f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of the positive class (GLUE's F1 for MRPC and QQP)."""
    predicted, actual = np.asarray(predictions) == positive, np.asarray(labels) == positive
    true_positive = float(np.sum(predicted & actual))
    if true_positive == 0:
        return 0.0
    precision, recall = true_positive / predicted.sum(), true_positive / actual.sum()
    return 2 * precision * recall / (precision + recall)


def matthews(predictions: np.ndarray, labels: np.ndarray) -> float:
    """Matthews correlation for two classes (CoLA); 0 when a margin is empty."""
    p, a = np.asarray(predictions) == 1, np.asarray(labels) == 1
    tp, tn, fp, fn = (float(np.sum(x)) for x in (p & a, ~p & ~a, p & ~a, ~p & a))
    denominator = np.sqrt((tp + fp) * (tp + fn) * (tn + fp) * (tn + fn))
    return float((tp * tn - fp * fn) / denominator) if denominator else 0.0


def pearson(predictions: np.ndarray, labels: np.ndarray) -> float:
    x, y = np.asarray(predictions, float), np.asarray(labels, float)
    x, y = x - x.mean(), y - y.mean()
    denominator = np.sqrt((x * x).sum() * (y * y).sum())
    return float((x * y).sum() / denominator) if denominator else 0.0


def _ranks(values: np.ndarray) -> np.ndarray:
    """Ranks starting at 1, ties sharing their average rank."""
    values = np.asarray(values, float)
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values))
    sorted_values = values[order]
    start = 0
    for end in range(1, len(values) + 1):
        if end == len(values) or sorted_values[end] != sorted_values[start]:
            ranks[order[start:end]] = (start + end + 1) / 2
            start = end
    return ranks


def spearman(predictions: np.ndarray, labels: np.ndarray) -> float:
    return pearson(_ranks(predictions), _ranks(labels))


METRICS = {"accuracy": accuracy, "f1": f1, "mcc": matthews, "pearson": pearson, "spearman": spearman}


def score(names: list[str], predictions: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    return {name: METRICS[name](predictions, labels) for name in names}
