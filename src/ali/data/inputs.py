"""New data to score or encode with a trained model (``ali score``): an npz file, a folder of
images or a CSV of feature vectors, read into the shape the model takes."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import DataError
from .images import IMAGE_EXTENSIONS, convert, hwc, one_line, read_image

NPZ_KEYS = ("x", "x_test", "x_train")
"""The arrays an npz input is read from, in this order (or its only array)."""


def read_inputs(path: str | Path, data_shape: tuple[int, ...],
                label_column: str = "") -> tuple[Tensor, list[str]]:
    """(x, names): the items of ``path`` for a model taking items of ``data_shape`` (images
    (C, H, W) as uint8, resized where a folder's images differ; feature vectors (D,) as
    float32), and a name per item (the file name for a folder, else the row number).
    ``label_column``: the training CSV's label column (``data.label_column``), left out of a
    CSV that has it and one column more than the features.

    A one-line :class:`~ali.errors.DataError` for a missing or unreadable input, no items, a
    text or missing value in a CSV, or items of another width or shape.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"no input at {path}")
    images = len(data_shape) == 3
    if path.is_dir():
        if not images:
            raise DataError(f"{path} is a folder of images, but the model takes feature "
                            f"vectors of shape {list(data_shape)}")
        files = sorted(p for p in path.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
        if not files:
            raise DataError(f"{path} holds no images ({', '.join(IMAGE_EXTENSIONS)})")
        c, h, _ = data_shape
        x = torch.stack([read_image(p, h, c) for p in files])
        return x, [str(p.relative_to(path)) for p in files]
    if path.suffix == ".npz":
        x = _npz(path)
        if images:
            if x.dtype != np.uint8 or x.ndim not in (3, 4):
                raise DataError(f"{path}: images must be uint8 (N, H, W) or (N, H, W, C); got "
                                f"{x.dtype} {list(x.shape)}")
            t = hwc(x)
            if tuple(t.shape[1:]) != tuple(data_shape):
                t = convert(t, data_shape[1], data_shape[0])
        else:
            check_features(x, path, "feature vectors")
            t = _vectors(x.astype(np.float64, copy=False), path)
    elif path.suffix == ".csv":
        if images:
            raise DataError(f"{path} is a CSV of feature vectors, but the model takes images")
        t = _vectors(_csv_features(path, label_column, data_shape[0]), path)
    else:
        raise DataError(f"{path}: give an .npz file, a .csv file or a folder of images")
    if len(t) == 0:
        raise DataError(f"{path} holds no items")
    if tuple(t.shape[1:]) != tuple(data_shape):
        raise DataError(f"{path}: items of shape {list(t.shape[1:])}, but the model takes "
                        f"{list(data_shape)}")
    return t, [str(i) for i in range(len(t))]


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """Every array of the .npz file ``path``; a truncated or foreign file, or a member that is
    not an array, is a one-line DataError."""
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
    except Exception as e:  # a truncated or foreign file
        raise DataError(f"{path} is truncated or not an .npz file ({one_line(e)})") from None
    # np.load hands back the raw bytes of a member that is not a .npy array
    bad = next((k for k, v in arrays.items() if not isinstance(v, np.ndarray)), None)
    if bad is not None:
        raise DataError(f"{path}: member {bad!r} is not an array (the file is damaged or not "
                        "written by numpy)")
    return arrays


def _npz(path: Path) -> np.ndarray:
    arrays = read_npz(path)
    keys = list(arrays)
    key = next((k for k in NPZ_KEYS if k in keys), keys[0] if len(keys) == 1 else None)
    if key is None:
        raise DataError(f"{path} holds {', '.join(keys) or 'no arrays'}; name the items "
                        f"{' or '.join(NPZ_KEYS)}")
    return arrays[key]


def check_features(x: np.ndarray, path: Path, what: str) -> None:
    """A one-line DataError unless ``x`` is an (N, D) array of real numbers (integers, floats
    or booleans): strings, even of digits, and complex numbers are not feature vectors (the
    imaginary part would be dropped with a warning). Training and ``ali score`` alike."""
    if x.ndim != 2 or not (np.issubdtype(x.dtype, np.integer) or
                           np.issubdtype(x.dtype, np.floating) or x.dtype == np.bool_):
        raise DataError(f"{path}: {what} must be numbers of shape (N, D); got {x.dtype} "
                        f"{list(x.shape)}")


def _csv_features(path: Path, label_column: str, width: int) -> np.ndarray:
    """The CSV's feature columns: without ``label_column`` where that leaves ``width`` of
    them, else every column (whose errors are then the ones to report)."""
    rows = _csv_rows(path)
    if label_column:
        try:
            x = _table_of(rows, path, label_column)[0]
        except DataError:
            x = None
        if x is not None and x.shape[1] == width:
            return x
    return _table_of(rows, path, "")[0]


def read_csv_table(path: Path, label_column: str = "") -> tuple[np.ndarray, list[str] | None]:
    """(features (N, D) float64, the label column's N values as text or None) of a CSV of
    feature vectors. ``label_column``: the column holding labels, by header name or 0-based
    index (a header name first); "" for none.

    A first row that is not all numbers is a header of names (skipped). A first row of numbers
    is data, unless ``label_column`` is one of its values and cannot be a 0-based index of it
    (``4`` of ``1,2,3,4``, or ``3.0``): then it is a header of numeric names, and the label
    column the one so named. Any other header of numbers cannot be told from data: name the
    columns with text (``f0,f1,f2,label``).

    A one-line :class:`~ali.errors.DataError` for a text value among the features, rows of
    different lengths, NaN or infinite values, an unknown label column, or a first row read as
    data whose label is a number where every other row's is a class name (a header of numbers).
    """
    return _table_of(_csv_rows(path), path, label_column)


def _csv_rows(path: Path) -> list[list[str]]:
    """The non-empty rows of the CSV ``path`` as text; a one-line DataError where it cannot be
    read."""
    try:
        with open(path, newline="") as f:
            return [r for r in csv.reader(f) if r]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{path} is not a readable CSV file ({type(e).__name__})") from None


def _table_of(rows: list[list[str]], path: Path,
              label_column: str) -> tuple[np.ndarray, list[str] | None]:
    """:func:`read_csv_table` of the CSV ``path`` whose rows are ``rows`` (left unchanged)."""
    header = rows[0] if _is_header(rows, label_column) else None
    if header is not None:
        rows = rows[1:]
    col = None
    if label_column:
        names = [h.strip() for h in header] if header is not None else []
        if label_column in names:
            col = names.index(label_column)
        elif _is_index(label_column):
            col = int(label_column)
        else:
            raise DataError(f"{path} has no column {label_column!r}"
                            + (f" (columns: {', '.join(names)})" if names else " (no header)"))
    if not rows:
        raise DataError(f"{path} holds no rows of values" + (" (a header only)" if header else ""))
    if len({len(r) for r in rows}) != 1:
        raise DataError(f"{path}: the rows must all have the same number of values")
    width = len(rows[0])
    if col is not None and not -width <= col < width:
        raise DataError(f"{path}: label column {col} is out of range (rows have {width} values)")
    labels = None
    if col is not None:
        col %= width
        labels = [r[col].strip() for r in rows]
        rows = [r[:col] + r[col + 1:] for r in rows]
        if header is None and len(labels) > 1 and not any(map(_is_number, labels[1:])):
            # Row 1 is all numbers, its label too, among class names: a header of numbers
            # read as data would make its name a class of one row.
            raise DataError(f"{path}: row 1 is all numbers, so it is read as data, but its "
                            f"label {labels[0]!r} is a number where the other rows' are class "
                            f"names ({labels[1]!r}, ...); if row 1 is a header, name its "
                            f"columns with text (e.g. f0,f1,label)")
    for i, r in enumerate(rows):
        if not _numeric(r):
            bad = next(v for v in r if not _is_number(v))
            raise DataError(f"{path}: row {i + 1} has a non-numeric value {bad!r}")
    a = np.asarray(rows, dtype=np.float64)
    if not np.isfinite(a).all():
        raise DataError(f"{path}: {int((~np.isfinite(a)).sum())} values are NaN or infinite")
    return a, labels


def _is_header(rows: list[list[str]], label_column: str) -> bool:
    """Whether the first of ``rows`` is a header (:func:`read_csv_table`'s rule)."""
    if not rows:
        return False
    first = rows[0]
    if not _numeric(first):
        return True
    if label_column not in (v.strip() for v in first):
        return False
    # The label column names a value of this row: as an index of it, the row may be data.
    return not (_is_index(label_column) and -len(first) <= int(label_column) < len(first))


def _is_index(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _is_number(v: str) -> bool:
    try:
        float(v)
        return True
    except ValueError:
        return False


def _numeric(row: list[str]) -> bool:
    return all(_is_number(v) for v in row)


def _vectors(a: np.ndarray, path: Path) -> Tensor:
    if a.ndim != 2:
        raise DataError(f"{path}: feature vectors must be (N, D); got {list(a.shape)}")
    if not np.isfinite(a).all():
        raise DataError(f"{path}: {int((~np.isfinite(a)).sum())} values are NaN or infinite")
    big = int((np.abs(a) > np.finfo(np.float32).max).sum())
    if big:     # they would become infinite in the model's float32
        raise DataError(f"{path}: {big} values are beyond float32's range (about 3.4e38)")
    return torch.from_numpy(a.astype(np.float32))
