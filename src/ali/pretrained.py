"""Reload a trained model without the training engine or the dataset: :func:`load`.

A model describes itself: :meth:`~ali.model.GenerativeModel.save_pretrained` writes its weights
(``model.safetensors``) and its own :class:`~ali.config.ModelConfig` (``config.json``, which
already holds what the dataset filled in at training time: the number of classes or attributes
of a conditional or semi-supervised model). :func:`load` rebuilds the networks from that config
alone and loads the weights. It also takes a run folder written by ``ali train``, whose latest
checkpoint holds the full training config.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import AliError, CheckpointError, ConfigError, one_line

__all__ = ["features", "load", "is_pretrained"]


def is_pretrained(path: str | Path) -> bool:
    """Whether ``path`` is a folder written by ``save_pretrained`` (it holds the weights file;
    a run folder's ``config.json`` is the training config, without weights beside it)."""
    from .model import PRETRAINED_WEIGHTS

    return (Path(path) / PRETRAINED_WEIGHTS).exists()


def load(path: str | Path, device: str = "cpu") -> Any:
    """The model saved at ``path``, on ``device``, in evaluation mode.

    Args:
        path: a folder written by ``model.save_pretrained`` (``model.safetensors`` +
            ``config.json``) or a run folder written by ``ali train`` (its
            ``checkpoints/latest.pt``).
        device: where to put the model (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``, or
            ``"auto"``: the best available); one this process cannot use is a one-line
            :class:`~ali.errors.ConfigError`.

    Returns:
        GenerativeModel: the model (an ``ALI``, ``GAN``, ``GANInverse``, ``GANPostHoc`` or
            ``VAE``), with its ``config`` set.

    Raises:
        CheckpointError: (one line) nothing at ``path``; a folder that is neither kind; a
            missing, truncated or corrupted file; a config or weights of another model.
    """
    from .distributed import resolve_device

    device = resolve_device(device, mps=True)
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"no saved model or run folder at {path}")
    if not path.is_dir():
        raise CheckpointError(f"{path} is a file; ali.load takes the folder written by "
                              "save_pretrained, or a run folder")
    if is_pretrained(path):
        return _load_pretrained(path, device)
    if (path / "checkpoints").is_dir():
        from .checkpoint import load_run

        return load_run(path, device)[0]
    raise CheckpointError(f"{path} is neither a saved model (model.safetensors and config.json) "
                          "nor a run folder (checkpoints/latest.pt)")


def read_config(path: str | Path):
    """The :class:`~ali.config.ModelConfig` of a ``save_pretrained`` folder, or a one-line
    :class:`~ali.errors.CheckpointError`."""
    from .config import Config
    from .model import PRETRAINED_CONFIG, PRETRAINED_FORMAT

    file = Path(path) / PRETRAINED_CONFIG
    if not file.is_file():
        raise CheckpointError(f"{path} has weights but no {PRETRAINED_CONFIG}")
    try:
        meta = json.loads(file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"cannot read {file} (truncated or corrupted?): "
                              f"{one_line(e)}") from None
    if not isinstance(meta, dict) or meta.get("format") != PRETRAINED_FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else None
        raise CheckpointError(f"{file} is not an ali saved model (format {found!r}, expected "
                              f"{PRETRAINED_FORMAT!r})")
    if not isinstance(meta.get("model"), dict):
        raise CheckpointError(f"{file} has no model config")
    try:
        return Config.from_dict({"model": meta["model"]}).model
    except ConfigError as e:
        raise CheckpointError(f"{file} holds an invalid model config: {one_line(e)}") from None


def _load_pretrained(path: Path, device: str) -> Any:
    from .config import Config
    from .model import PRETRAINED_WEIGHTS
    from .build import build_model

    model_cfg = read_config(path)
    weights = path / PRETRAINED_WEIGHTS
    try:
        from safetensors.torch import load_file

        state = load_file(str(weights))
    except Exception as e:  # safetensors raises its own error types on damaged files
        raise CheckpointError(f"cannot read {weights} (truncated or corrupted?): "
                              f"{type(e).__name__}: {one_line(e)}") from None
    try:
        model = build_model(Config(model=model_cfg))
    except AliError as e:
        raise CheckpointError(f"{path}: cannot build its model: {one_line(e)}") from None
    try:
        model.load_state_dict(state)
    except (RuntimeError, KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{weights} does not fit the model of its config.json: "
                              f"{one_line(e)}") from None
    return model.to(device).eval()


def features(model: Any, x: Any, y: Any = None, kind: str = "mu", device: str = "cpu",
             batch_size: int = 500) -> Any:
    """Encoder features of ``x`` from a model, a saved model folder or a run folder: the
    three-line route from a trained ALI to scikit-learn.

    ``model`` may be a :class:`~ali.model.GenerativeModel` or a path for :func:`load` (loaded
    on ``device``); the rest is :meth:`~ali.model.GenerativeModel.features`: (N, D) float32,
    detached, on the model's device.

    Example:
        ```python
        import ali
        f = ali.features("runs/mnist", images_uint8).numpy()   # (N, 32)
        LogisticRegression(max_iter=1000).fit(f, labels)
        ```
    """
    if isinstance(model, (str, Path)):
        model = load(model, device)
    return model.features(x, y, kind, batch_size)
