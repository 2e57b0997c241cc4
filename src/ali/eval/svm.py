"""The paper's L2-SVM protocol (section 4.3, Table 1), as the original code ran it.

A linear SVM with the squared hinge loss and an L2 penalty (scikit-learn's ``LinearSVC``,
one-vs-rest, no feature scaling) is trained on a subset of ``labels`` labelled training
examples for every C in ``exp(linspace(-20, 20, 50))``, and the C with the lowest validation
error is kept. Then ``repeats`` SVMs with that C, each on a fresh ``labels``-example subset, are
scored on the whole test set: the result is the mean and standard deviation of their test
errors, in percent. Where the subsets and the validation split come from is the protocol:

- ``svhn``, the authors' ``semi_supervised_svhn.py`` for Table 1: the subsets are uniform random
  draws (not class-balanced) from SVHN ``train[0:63257]`` and the validation split is the fixed
  ``train[63257:73257]``, whatever split the encoder was trained on;
- ``balanced``, for every other dataset: a validation split (10,000 images, or a third of the
  training split where that is smaller) is carved at random from the labelled training split and
  the subsets are class-balanced draws from the rest.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import Callable

import numpy as np

from ..errors import AliError

C_GRID = tuple(np.exp(np.linspace(-20, 20, 50)).tolist())
VAL_SIZE = 10_000
SVHN_POOL = 63_257
"""SVHN ``train[0:SVHN_POOL]`` is where the svhn protocol draws its labelled examples ..."""
SVHN_TRAIN = 73_257
"""... and ``train[SVHN_POOL:SVHN_TRAIN]`` its fixed validation split (the whole train split)."""
PROTOCOLS = ("balanced", "svhn")


def require_sklearn():
    """scikit-learn's modules, or a one-line error saying how to install them."""
    try:
        import sklearn  # noqa: F401
    except ImportError:
        raise AliError("this metric needs scikit-learn: pip install 'ali[eval]'") from None
    import sklearn.svm
    return sklearn


def balanced_subset(y: np.ndarray, pool: np.ndarray, n: int, classes: np.ndarray,
                    rng: np.random.Generator) -> np.ndarray:
    """``n`` indices from ``pool``, ``n // K`` per class (the first ``n % K`` classes one
    more), drawn without replacement."""
    out = []
    for i, k in enumerate(classes):
        want = n // len(classes) + (i < n % len(classes))
        members = pool[y[pool] == k]
        if len(members) < want:
            raise AliError(f"--labels {n}: class {k} has only {len(members)} training examples "
                           f"outside the validation split, {want} needed")
        out.append(rng.choice(members, want, replace=False))
    return np.concatenate(out)


@dataclass
class Plan:
    """Which training items the protocol uses: the validation split, the subset on which C is
    chosen and the ``repeats`` scored subsets (indices into the training split)."""

    val: np.ndarray
    select: np.ndarray
    subsets: list[np.ndarray]

    def needed(self) -> np.ndarray:
        """Every training index the protocol touches, sorted."""
        return np.unique(np.concatenate([self.val, self.select, *self.subsets]))


def plan(y: np.ndarray, labels: int = 1000, repeats: int = 100, val_size: int | None = None,
         seed: int = 0, protocol: str = "balanced") -> Plan:
    """Draw the validation split and the subsets from training labels ``y`` (-1: no label).

    ``balanced``: a random validation split of ``val_size`` labelled items (None: 10,000 or a
    third of them, whichever is smaller) and class-balanced subsets from the rest. ``svhn``:
    ``y`` is SVHN's whole train split; the fixed validation split ``[SVHN_POOL:SVHN_TRAIN]`` and
    uniform random subsets of ``[0:SVHN_POOL]`` (``val_size`` does not apply)."""
    if labels < 1 or repeats < 1:
        raise AliError(f"--labels and --repeats must be >= 1; got {labels} and {repeats}")
    if protocol not in PROTOCOLS:
        raise AliError(f"unknown SVM protocol {protocol!r} (known: {', '.join(PROTOCOLS)})")
    rng = np.random.default_rng(seed)
    if protocol == "svhn":
        if len(y) != SVHN_TRAIN or (y < 0).any():
            raise AliError(f"the svhn SVM protocol needs SVHN's whole labelled train split "
                           f"({SVHN_TRAIN:,} images; got {len(y):,}): use --protocol balanced")
        if val_size is not None:
            raise AliError("--val-size does not apply to the svhn SVM protocol (its validation "
                           f"split is the fixed train[{SVHN_POOL}:{SVHN_TRAIN}])")
        if labels > SVHN_POOL:
            raise AliError(f"--labels {labels} is more than the {SVHN_POOL:,} examples of the pool")
        val = np.arange(SVHN_POOL, SVHN_TRAIN)
        draw = lambda: np.sort(rng.choice(SVHN_POOL, labels, replace=False))  # noqa: E731
        return Plan(val, draw(), [draw() for _ in range(repeats)])
    labelled = np.flatnonzero(y >= 0)
    classes = np.unique(y[labelled])
    if len(classes) < 2:
        raise AliError("the SVM protocol needs a training split with at least two classes")
    if labels < len(classes):
        raise AliError(f"--labels {labels} is fewer than the {len(classes)} classes")
    if val_size is None:
        val_size = min(VAL_SIZE, len(labelled) // 3)
    if not 1 <= val_size < len(labelled) - labels + 1:
        raise AliError(f"--val-size {val_size} leaves too few of the {len(labelled)} labelled "
                       f"training examples for {labels}-example subsets")
    perm = rng.permutation(labelled)
    val, rest = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    select = balanced_subset(y, rest, labels, classes, rng)
    subsets = [balanced_subset(y, rest, labels, classes, rng) for _ in range(repeats)]
    return Plan(val, select, subsets)


def _fit(C: float, x: np.ndarray, y: np.ndarray, seed: int, max_iter: int):
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.svm import LinearSVC

    svm = LinearSVC(C=C, loss="squared_hinge", penalty="l2", max_iter=max_iter, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        svm.fit(x, y)
    return svm


def error_percent(svm, x: np.ndarray, y: np.ndarray) -> float:
    return float(100.0 * np.mean(svm.predict(x) != y))


def run(features: Callable[[np.ndarray], np.ndarray], y_train: np.ndarray, f_test: np.ndarray,
        y_test: np.ndarray, labels: int = 1000, repeats: int = 100, val_size: int | None = None,
        c_grid: tuple[float, ...] = C_GRID, seed: int = 0, max_iter: int = 1000,
        log: Callable[[str], None] | None = None, protocol: str = "balanced") -> dict:
    """The protocol on training labels ``y_train`` and test features/labels.

    ``features(idx)`` returns the features (len(idx), D) of training items ``idx``; only the
    items the protocol uses are asked for. Returns ``error_mean`` and ``error_std`` (percent,
    std with ddof 0), ``labels``, ``repeats``, ``feature_dim``, the chosen ``C``, its
    ``val_error`` and the validation error of every C (``c_search``), and the ``protocol``
    (see :func:`plan`).
    """
    require_sklearn()
    log = log or (lambda s: None)
    p = plan(np.asarray(y_train), labels, repeats, val_size, seed, protocol)
    need = p.needed()
    t0 = time.perf_counter()
    f_need = np.asarray(features(need), dtype=np.float64)
    pos = {int(i): j for j, i in enumerate(need)}
    f = lambda idx: f_need[[pos[int(i)] for i in idx]]  # noqa: E731
    y_train = np.asarray(y_train)
    f_test = np.asarray(f_test, dtype=np.float64)
    log(f"features of {len(need)} training items: {f_need.shape[1]} dims "
        f"({time.perf_counter() - t0:.1f} s)")
    f_val, y_val = f(p.val), y_train[p.val]
    f_sel, y_sel = f(p.select), y_train[p.select]
    search = []
    for C in c_grid:
        search.append(error_percent(_fit(C, f_sel, y_sel, seed, max_iter), f_val, y_val))
    best = int(np.argmin(search))
    C = float(c_grid[best])
    log(f"C = {C:.4g} (validation error {search[best]:.2f}% on {len(p.val)} items)")
    errors = []
    for r, idx in enumerate(p.subsets):
        errors.append(error_percent(_fit(C, f(idx), y_train[idx], seed + r, max_iter),
                                    f_test, np.asarray(y_test)))
    return {"error_mean": float(np.mean(errors)), "error_std": float(np.std(errors)),
            "labels": labels, "repeats": repeats, "protocol": protocol, "feature_dim": int(f_need.shape[1]),
            "C": C, "val_error": search[best], "val_size": int(len(p.val)),
            "test_size": int(len(f_test)), "errors": errors,
            "c_search": {f"{c:.6g}": e for c, e in zip(c_grid, search)}}
