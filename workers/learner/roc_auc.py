"""River's ROC AUC, counted by threshold bin: the same value for a tenth of the work per update.

`river.metrics.ROCAUC` keeps one confusion matrix per threshold and updates all ten for every
prediction, which made it the dearest of the learner's prequential metrics (~3 µs of its ~5 µs
per example). A prediction above thresholds t_0..t_{k-1} and not above t_k lands in bin k, so
one bisect and one increment record it; `get` rebuilds each threshold's counts from the bins
and integrates exactly as River does, so the value is River's, bit for bit.
"""

from __future__ import annotations

from bisect import bisect_left
from typing import Any

from scipy import integrate


class BinnedROCAUC:
    """Drop-in for `river.metrics.ROCAUC()` (10 thresholds, positive class True)."""

    requires_labels = False  # scored from the probabilities, like River's

    def __init__(self, n_thresholds: int = 10, pos_val: Any = True) -> None:
        self.pos_val = pos_val
        # River's thresholds, nudged at both ends the same way.
        self.thresholds = [i / (n_thresholds - 1) for i in range(n_thresholds)]
        self.thresholds[0] -= 1e-7
        self.thresholds[-1] += 1e-7
        # Bin k: predictions above exactly the k lowest thresholds (p > t  <=>  t < p).
        self._positives = [0.0] * (n_thresholds + 1)
        self._negatives = [0.0] * (n_thresholds + 1)

    def update(self, y_true: Any, y_pred: Any, w: float = 1.0) -> None:
        """Count one prediction (a probability dict, or the positive class's probability)."""
        p_true = y_pred.get(True, 0.0) if isinstance(y_pred, dict) else y_pred
        counts = self._positives if y_true == self.pos_val else self._negatives
        counts[bisect_left(self.thresholds, p_true)] += w

    def get(self) -> float:
        """Return the area under the discretised ROC curve, as River computes it."""
        n = len(self.thresholds)
        positives, negatives = self._positives, self._negatives
        tprs, fprs = [0.0] * n, [0.0] * n
        # Above threshold j: bins j+1..n. Summed from the top, in the order River's matrices
        # would have accumulated the same counts (whole numbers: the sums are exact).
        tp = fp = 0.0
        all_positives, all_negatives = sum(positives), sum(negatives)
        for j in range(n - 1, -1, -1):
            tp += positives[j + 1]
            fp += negatives[j + 1]
            fn, tn = all_positives - tp, all_negatives - fp
            tprs[j] = tp / (tp + fn) if tp + fn else 0.0
            fprs[j] = fp / (fp + tn) if fp + tn else 0.0
        return float(-integrate.trapezoid(x=fprs, y=tprs))
