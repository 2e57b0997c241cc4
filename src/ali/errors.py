"""User-facing errors.

Anything the user can cause (a typo in a config key, a missing file, an impossible value) is
raised as an :class:`AliError`. The command line prints its message as one line on stderr and
exits non-zero; it never shows a traceback for these.
"""

from __future__ import annotations


class AliError(Exception):
    """An error caused by the user's input, reported as one clear line."""


class ConfigError(AliError, ValueError):
    """An invalid configuration name, key, type or value."""


class ConditionError(AliError, ValueError):
    """A conditional model called without the condition y it needs (or an unconditional one
    given a y)."""


class EncoderError(AliError, TypeError):
    """Inference asked of a model that has no encoder (a GAN)."""


class DiscriminatorError(AliError, TypeError):
    """Asked of a model that has no discriminator (a VAE), or not the kind the call needs."""


class ArgumentError(AliError, ValueError):
    """A model method called with an impossible argument (a count below its least)."""


class DataError(AliError):
    """A dataset that is missing, truncated or malformed."""


class CheckpointError(AliError):
    """A checkpoint or run folder that cannot be used."""


class DivergenceError(AliError):
    """Training produced a non-finite loss or parameter; the last good checkpoint is kept."""

    def __init__(self, message: str, step: int) -> None:
        super().__init__(message)
        self.step = step


class TrainingInterrupted(AliError):
    """SIGINT or SIGTERM stopped training after a checkpoint was written.

    ``signum`` is the signal, ``step`` the step of the checkpoint, and ``result`` the
    :class:`~ali.train.TrainResult` so far (the model is usable as it is).
    """

    def __init__(self, message: str, signum: int, step: int, result: object = None) -> None:
        super().__init__(message)
        self.signum, self.step, self.result = signum, step, result


def one_line(e: BaseException, limit: int | None = 200) -> str:
    """``e``'s message as one short printable line, for an error that must be one line.

    Terminal colour codes and control characters go, whitespace runs become one space, and the
    text is cut at ``limit`` characters (None: not cut) (torch's and inductor's messages span pages of advice
    after the cause). Of torch's ``weights_only`` unpickling advice only the cause is kept: it
    names what is wrong with the file.
    """
    import re

    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    cause = re.search(r"WeightsUnpickler error: ([^\n]*?)(\. |\n|$)", text)
    if cause:
        text = f"it holds more than tensors and plain values ({cause.group(1)})"
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    text = text or type(e).__name__
    return text if limit is None or len(text) <= limit else text[:limit] + "..."
