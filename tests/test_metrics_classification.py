"""Classification metrics cross-checked against scikit-learn and naive loops."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn import metrics as skm

from anivision.metrics.classification import (
    classification_metrics,
    confusion_matrix,
    expected_calibration_error,
    format_classification_report,
    topk_accuracy,
)


def _random_case(seed: int, n: int, n_classes: int, absent: tuple[int, ...] = ()):
    """Random labels (with some classes absent from y_true) and softmax probabilities that are
    correlated with the labels, so accuracy is neither 0 nor chance."""
    rng = np.random.default_rng(seed)
    allowed = np.array([c for c in range(n_classes) if c not in absent])
    y = rng.choice(allowed, size=n)
    logits = rng.normal(size=(n, n_classes)) * 1.5
    logits[np.arange(n), y] += rng.uniform(0, 3, size=n)
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return y, probs


def _naive_ece(y, probs, n_bins):
    conf = probs.max(axis=1)
    correct = probs.argmax(axis=1) == y
    edges = np.linspace(0, 1, n_bins + 1)
    ece = 0.0
    for b in range(n_bins):
        lo, hi = edges[b], edges[b + 1]
        in_bin = (conf > lo) & (conf <= hi) if b > 0 else (conf >= lo) & (conf <= hi)
        if in_bin.any():
            ece += in_bin.mean() * abs(correct[in_bin].mean() - conf[in_bin].mean())
    return ece


CASES = [
    (0, 200, 7, ()),
    (1, 300, 12, (3, 9)),  # classes absent from y_true
    (2, 50, 16, (0, 1, 2, 15)),  # small test set: some classes never predicted either
    (3, 120, 2, ()),
    (4, 40, 4, (2,)),
]


@pytest.mark.parametrize("seed,n,n_classes,absent", CASES)
def test_matches_sklearn(seed, n, n_classes, absent):
    y, probs = _random_case(seed, n, n_classes, absent)
    classes = [f"c{i}" for i in range(n_classes)]
    m = classification_metrics(y, probs, classes)
    pred = probs.argmax(axis=1)
    labels = list(range(n_classes))

    assert m["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    for k in (3, 5):
        if n_classes >= k:
            ref = skm.top_k_accuracy_score(y, probs, k=k, labels=labels)
            assert m[f"top{k}_accuracy"] == pytest.approx(ref, abs=1e-12)
        else:
            assert f"top{k}_accuracy" not in m

    # Per class: all C classes, zero_division=0.
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=labels, zero_division=0)
    for i, name in enumerate(classes):
        row = m["per_class"][name]
        assert row["precision"] == pytest.approx(p[i], abs=1e-12)
        assert row["recall"] == pytest.approx(r[i], abs=1e-12)
        assert row["f1"] == pytest.approx(f[i], abs=1e-12)
        assert row["support"] == s[i]

    # Averages: scikit-learn's default label set (present in y_true or y_pred).
    for avg in ("macro", "weighted"):
        p, r, f, _ = skm.precision_recall_fscore_support(y, pred, average=avg, zero_division=0)
        assert m[f"precision_{avg}"] == pytest.approx(p, abs=1e-12)
        assert m[f"recall_{avg}"] == pytest.approx(r, abs=1e-12)
        assert m[f"f1_{avg}"] == pytest.approx(f, abs=1e-12)

    cm_ref = skm.confusion_matrix(y, pred, labels=labels)
    assert np.array_equal(np.array(m["confusion_matrix"]), cm_ref)
    assert np.array(m["confusion_matrix"]).shape == (n_classes, n_classes)

    assert m["nll"] == pytest.approx(skm.log_loss(y, probs, labels=labels), rel=1e-9)
    brier_ref = skm.brier_score_loss(y, probs, labels=labels) if n_classes > 2 else None
    if brier_ref is not None:
        assert m["brier"] == pytest.approx(brier_ref, rel=1e-9)
    assert m["ece"] == pytest.approx(_naive_ece(y, probs, 15), abs=1e-12)
    assert m["n_images"] == n
    assert m["classes"] == classes
    json.dumps(m, allow_nan=False)  # fully JSON-serialisable, no NaN


def test_reliability_bins_consistent_with_ece():
    y, probs = _random_case(5, 500, 6)
    m = classification_metrics(y, probs, [str(i) for i in range(6)], n_bins=10)
    rel = m["reliability"]
    assert len(rel["bin_edges"]) == 11
    assert len(rel["confidence"]) == len(rel["accuracy"]) == len(rel["count"]) == 10
    assert sum(rel["count"]) == 500
    ece = sum(
        c / 500 * abs(a - f)
        for c, a, f in zip(rel["count"], rel["accuracy"], rel["confidence"])
        if c > 0
    )
    assert ece == pytest.approx(m["ece"], abs=1e-12)
    # Confidence is at least 1/C, so the lowest bin (0, 0.1] is empty and marked None.
    assert rel["count"][0] == 0 and rel["confidence"][0] is None and rel["accuracy"][0] is None


@pytest.mark.parametrize("n_bins", [1, 5, 15, 20])
def test_ece_matches_naive_loop(n_bins):
    y, probs = _random_case(6, 400, 5)
    assert expected_calibration_error(y, probs, n_bins) == pytest.approx(
        _naive_ece(y, probs, n_bins), abs=1e-12
    )


def test_ece_confidence_on_bin_edges():
    # Confidences 0.5 and 1.0 sit exactly on edges of 10 bins: right-closed bins put them in
    # (0.4, 0.5] and (0.9, 1.0].
    probs = np.array([[0.5, 0.5], [1.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    y = np.array([0, 0, 0, 1])
    rel = classification_metrics(y, probs, ["a", "b"], n_bins=10)["reliability"]
    assert rel["count"][4] == 2 and rel["count"][9] == 2
    assert expected_calibration_error(y, probs, 10) == pytest.approx(_naive_ece(y, probs, 10))


def test_perfect_and_known_values():
    probs = np.eye(3)[[0, 1, 2, 0]]
    m = classification_metrics(np.array([0, 1, 2, 0]), probs, ["a", "b", "c"])
    assert m["accuracy"] == 1.0 and m["f1_macro"] == 1.0 and m["ece"] == 0.0
    assert m["nll"] == pytest.approx(0.0, abs=1e-12)
    assert m["brier"] == 0.0
    # One confident mistake: NLL uses the clipped probability, finite.
    probs = np.array([[1.0, 0.0], [0.0, 1.0]])
    m = classification_metrics(np.array([1, 1]), probs, ["a", "b"])
    assert m["nll"] == pytest.approx(-np.log(1e-12) / 2)
    assert m["accuracy"] == 0.5


def test_topk_ties_follow_argmax():
    probs = np.full((4, 5), 0.2)
    y = np.array([0, 1, 3, 4])
    assert topk_accuracy(y, probs, 1) == pytest.approx(np.mean(probs.argmax(1) == y))
    assert topk_accuracy(y, probs, 2) == 0.5  # classes 0 and 1 come first among ties
    assert topk_accuracy(y, probs, 5) == 1.0


def test_confusion_matrix_absent_classes_and_validation():
    cm = confusion_matrix(np.array([0, 0, 2]), np.array([0, 2, 2]), 4)
    assert cm.tolist() == [[1, 0, 1, 0], [0, 0, 0, 0], [0, 0, 1, 0], [0, 0, 0, 0]]
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 4]), np.array([0, 1]), 4)


def test_rejects_logits_and_bad_shapes():
    with pytest.raises(ValueError, match="softmax"):
        classification_metrics(np.array([0, 1]), np.array([[2.0, -1.0], [0.3, 0.1]]), ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 1]), np.eye(2), ["a"])
    with pytest.raises(ValueError):
        classification_metrics(np.array([0, 2]), np.eye(2), ["a", "b"])


def test_format_report_is_markdown_table():
    y, probs = _random_case(7, 60, 6)
    classes = ["alpha", "beta|pipe", "gamma", "delta", "epsilon", "zeta"]
    text = format_classification_report(classification_metrics(y, probs, classes))
    lines = text.splitlines()
    header = lines.index("| class | precision | recall | f1 | support |")
    table = lines[header:]
    assert len(table) == 2 + 6 + 2  # header, separator, classes, macro and weighted rows
    assert all(line.count("|") - line.count("\\|") == 6 for line in table)  # 5 columns
    assert "beta\\|pipe" in text
    assert "Top-5 accuracy" in text
