"""Evaluation metrics (``ali eval``: :mod:`ali.eval.registry`, :mod:`ali.eval.metrics`)."""

FEATURE_KINDS = ("encoder", "mu", "pixels")
"""Features of :func:`ali.eval.features.extract`: mu + the family's ``svm_layers``
activations, mu alone, raw pixels."""
