"""Adversarially Learned Inference (Dumoulin et al., 2016), Algorithm 1.

Notation follows the paper: ``x ~ q(x)`` is data, ``z ~ p(z) = N(0, I)`` is the prior,
``z_hat ~ q(z | x)`` is the encoder's sample ``E(x)`` and ``x_tilde ~ p(x | z)`` is the decoder's
sample ``G(z)``. The discriminator ``D(x, z)`` is built from three parts, ``D(x)``, ``D(z)`` and
``D(x, z)``, and scores the encoder pairs ``(x, z_hat)`` and the decoder pairs ``(x_tilde, z)``
as one batch of ``2B`` so that its batch norm and dropout see both halves.

Every model in the project (ALI and the baselines in :mod:`ali.baselines`) is a
:class:`GenerativeModel`: networks (:mod:`ali.nets`) plus an :class:`~ali.objectives.Objective`
of composable loss terms. The training engine calls :meth:`GenerativeModel.schedule` and
:meth:`GenerativeModel.losses`; users call ``sample``, ``encode``, ``reconstruct`` and friends.
"""

from __future__ import annotations

import dataclasses
import json
import operator
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn

from . import losses as L
from .anomaly import ALPHA, BATCH_SIZE, anomaly_score
from .errors import (ArgumentError, CheckpointError, ConditionError, DataError,
                     DiscriminatorError, EncoderError)
from .nets import family
from .nets.parts import (ConditionedNet, Conditioning, JointDiscriminator,  # noqa: F401
                         MarginalDiscriminator, Standardize, StochasticEncoder,
                         condition_vector, evaluating)
if TYPE_CHECKING:
    import numpy as np

from .objectives import GEN_LOSS, JointGame, KPlusOneGame, Losses, Objective  # noqa: F401

FEATURE_KINDS = ("mu", "svm")
"""What :meth:`GenerativeModel.features` returns: ``mu``, the encoder's point estimate, or
``svm``, the paper's L2-SVM features (section 4.3): mu concatenated with the post-batch-norm,
pre-activation outputs of the encoder blocks the network family names in ``svm_layers``."""

PRETRAINED_WEIGHTS = "model.safetensors"
PRETRAINED_CONFIG = "config.json"
PRETRAINED_FORMAT = "ali-pretrained-1"

DISCRIMINATORS = ("discriminator", "joint_discriminator", "d_xx", "d_zz")
"""The attributes that hold a model's discriminators, where it has them (D, gan_posthoc's
joint D, ALAD's D_xx and D_zz): what ``parameters_d`` and spectral normalisation cover."""


def whole(name: str, value: object, least: int | None = None) -> int:
    """``value``, a count, as an int (a 0-d integer tensor or a numpy integer too) of at least
    ``least`` where given, or a one-line :class:`~ali.errors.ArgumentError`: a float reached
    torch as a multi-line TypeError, a negative count as a torch error or a silent slice."""
    try:
        n = operator.index(value)
    except TypeError:
        raise ArgumentError(f"{name} must be a whole number; got {value!r}") from None
    if least is not None and n < least:
        raise ArgumentError(f"{name} must be >= {least}; got {n}")
    return n


class GenerativeModel(nn.Module):
    """The interface every model of the project shares.

    Args:
        decoder: G_x, mapping z of shape ``(B, *latent_shape)`` (and an embedded condition) to x.
        latent_shape: shape of one z, e.g. ``(64, 1, 1)`` for the image models, ``(runs, L)``
            for run-batched 2-D models.
        objective: the model's training objective (:func:`ali.objectives.build_objective`).
        encoder: q(z | x), a :class:`~ali.nets.parts.StochasticEncoder`, if the model infers.
        discriminator: D, if the model is adversarial.
        embed: conditional models (Eq. 7): the generator's
            :class:`~ali.nets.parts.Conditioning`, the linear embedding of y given to the
            encoder and the decoder (the discriminator owns its own).
        runs: independent copies trained side by side (2-D networks only).
    """

    encoder: StochasticEncoder | None
    discriminator: nn.Module | None
    config: object = None
    """The :class:`~ali.config.ModelConfig` the model was built from (set by
    :func:`ali.build.build_model`)."""

    def __init__(self, decoder: nn.Module, latent_shape: tuple[int, ...], objective: Objective,
                 encoder: StochasticEncoder | None = None,
                 discriminator: nn.Module | None = None, embed: Conditioning | None = None,
                 runs: int = 1) -> None:
        super().__init__()
        self.runs = runs
        self.objective = objective
        self.decoder = decoder
        self.encoder = encoder
        self.discriminator = discriminator
        self.latent_shape = tuple(latent_shape)
        self.embed = embed
        # Feature-vector models (the mlp family) standardise x with the training split's
        # statistics: set by ali.build.build_model, fitted by the run's data initialisation.
        self.scaler: Standardize | None = None

    # ------------------------------------------------------------------ conditioning
    @property
    def conditioning(self) -> Conditioning | None:
        """The generator's embedding of y; None for an unconditional model."""
        return self.embed

    @property
    def conditional(self) -> bool:
        return self.embed is not None

    @property
    def label_dim(self) -> int:
        """K, the size of a conditional model's y (0 when unconditional)."""
        return 0 if self.embed is None else self.embed.label_dim

    @property
    def attributes(self) -> bool:
        """Whether a conditional model's y is K 0/1 attributes (else a class index)."""
        return self.embed is not None and self.embed.attributes

    def embedded(self, v: Tensor | None) -> tuple[Tensor, ...]:
        """The generator's embedding of condition vectors ``v`` (B, K) as (B, E, 1, ..., 1),
        or () for an unconditional model."""
        if self.embed is None:
            if v is not None:
                raise ConditionError(f"{type(self).__name__} is not conditional: y must be None")
            return ()
        if v is None:
            raise ConditionError("this model is conditional: give y (class indices (B,) or "
                                 "0/1 attributes (B, K))")
        return (self.embed.embed(v, len(self.latent_shape) - 1),)

    def check_condition(self, y: Tensor | None, n: int | None = None) -> Tensor | None:
        """A conditional model's ``y`` for ``n`` examples as a tensor on the model's device, or
        a one-line :class:`~ali.errors.ConditionError` (see
        :meth:`~ali.nets.parts.Conditioning.check`); any other y as it is."""
        return y if y is None or self.embed is None else self.embed.check(y, n)

    def _cond(self, y: Tensor | None, n: int | None = None) -> tuple[Tensor, ...]:
        """The embedded condition of y (class indices (B,) or attributes (B, K)) for ``n``
        examples, or ()."""
        y = self.check_condition(y, n)
        if y is not None and self.embed is not None:
            y = self.embed.vector(y)
        return self.embedded(y)

    def default_condition(self, n: int) -> Tensor | None:
        """The y of :meth:`sample` when none is given: classes 0..K-1 in turn (class-conditional
        models); None for unconditional ones. Attribute-conditional models need an explicit y."""
        if self.embed is None:
            return None
        return self.embed.default(n, next(self.parameters()).device)

    # ------------------------------------------------------------------ features
    @property
    def data_shape(self) -> tuple[int, ...] | None:
        """The shape of one x the networks take, e.g. (1, 28, 28) or (2,) (None for a model not
        built from a config)."""
        if self.config is None:
            return None
        return tuple(family(self.config.nets).data_shape(self.config))

    def feature_layers(self) -> list[tuple[str, nn.Module]]:
        """(name, module) of the encoder layers whose outputs join mu in the ``svm`` features:
        the batch norm of each block in the family's ``svm_layers`` (its conv where it has
        none); empty for families that name none."""
        enc = self._need_encoder()
        fam = getattr(family(self.config.nets), "FAMILY", None) if self.config else None
        picks = getattr(fam, "svm_layers", ())
        if not picks:
            return []
        net = enc.net
        # A conditional encoder is body + head around the embedded condition; the family's
        # indices count the blocks of both.
        blocks = [*net.body, *net.head] if isinstance(net, ConditionedNet) else net
        out = []
        for i in picks:
            block = blocks[i]
            where = "bn" if hasattr(block, "bn") else "conv"
            spec = block.spec
            out.append((f"encoder[{i}] k{spec.kernel}s{spec.stride}-{spec.maps} {where}",
                        getattr(block, where)))
        return out

    def as_input(self, x: Tensor | "np.ndarray") -> Tensor:
        """``x`` checked against the networks' data shape and range and made float: uint8
        images become [0, 1]; float images must already be in [0, 1]; floats must be finite.
        One-line :class:`~ali.errors.DataError` on a mismatch."""
        x = torch.as_tensor(x)
        self.check_shape(x)
        want = self.data_shape
        images = want is None or len(want) >= 3
        if x.dtype == torch.uint8:
            return x.float() / 255 if images else self.standardized(x.float())
        if not x.is_floating_point():
            raise DataError(f"x must be uint8 or floating point; got {x.dtype}")
        # NaN passes any comparison with the range's ends, and the encoder maps it to NaN codes
        bad = int((~torch.isfinite(x)).sum())
        if bad:
            raise DataError(f"x holds {bad} NaN or infinite values")
        if images and len(x) and (float(x.min()) < 0 or float(x.max()) > 1):
            raise DataError(f"image pixels must be uint8 or floats in [0, 1]; got values in "
                            f"[{float(x.min()):.4g}, {float(x.max()):.4g}] (divide by 255?)")
        return x.float() if images else self.standardized(x.float())

    def check_shape(self, x: Tensor) -> None:
        """A one-line :class:`~ali.errors.DataError` unless ``x`` is a batch of the networks'
        data shape: convolutions would take images of another size and return a latent map of
        another shape without a word, and other shapes fail deep in the networks."""
        want = self.data_shape
        if want is not None and tuple(x.shape[1:]) != want:
            hint = (" (channels first: x.permute(0, 3, 1, 2))" if x.dim() == 4 and len(want) == 3
                    and tuple(x.shape[1:]) == (*want[1:], want[0]) else "")
            if self.runs > 1 and tuple(x.shape[1:]) == want[1:]:
                hint = f" (each run's copy: x.unsqueeze(1).expand(-1, {self.runs}, -1))"
            raise DataError(f"this model takes x of shape (N, {', '.join(map(str, want))}); got "
                            f"{tuple(x.shape)}{hint}")

    def _encoder_input(self, x: Tensor) -> Tensor:
        """``x`` for the encoder as it is, or a one-line error: of the data shape, floating
        point (the tensor-level methods do not convert, as :meth:`as_input` does)."""
        self.check_shape(x)
        if not x.is_floating_point():
            raise DataError(f"x must be floating point here (images in [0, 1]); got {x.dtype} "
                            "(model.features and model.anomaly_score take uint8)")
        return x

    def standardized(self, x: Tensor) -> Tensor:
        """x in the units the networks take: feature vectors standardised with the training
        split's statistics (``model.scaler``); anything else as it is. :meth:`as_input`,
        :meth:`features`, :meth:`anomaly_score` and :meth:`losses` apply it; the tensor-level
        methods (``encode``, ``decode``, ``reconstruct``, ``sample``) work in those units
        (``model.scaler.inverse`` maps back)."""
        return x if self.scaler is None else self.scaler(x)

    @torch.no_grad()
    def features(self, x: Tensor | "np.ndarray", y: Tensor | None = None, kind: str = "mu",
                 batch_size: int = 500) -> Tensor:
        """Flat, detached encoder features of ``x``: (N, D) float32 on the model's device.

        Args:
            x: (N, *data_shape) images as uint8 or floats in [0, 1] (2-D points as floats),
                a tensor or a numpy array; checked against the model (one-line error).
            y: a conditional model's labels of x (each example is encoded with its own).
            kind: ``mu`` (the encoder's point estimate) or ``svm`` (mu plus the paper's
                L2-SVM layers, see :data:`FEATURE_KINDS`).
            batch_size: examples per forward pass.

        The model is in evaluation mode for the call (batch norm on population statistics).

        Example:
            ```python
            f = model.features(images_uint8)            # (N, latent_dim)
            LogisticRegression().fit(f.cpu().numpy(), labels)
            ```
        """
        if kind not in FEATURE_KINDS:
            raise DataError(f"unknown features {kind!r} (known: {', '.join(FEATURE_KINDS)})")
        # a negative one would slice off the last examples without a word
        batch_size = whole("batch_size", batch_size, 1)
        self._need_encoder()
        x = self.as_input(x)
        # checked whole: the batches alone would miss a y longer than x by a whole batch
        y = self.check_condition(y, len(x))
        device = next(self.parameters()).device
        layers = self.feature_layers() if kind == "svm" else []
        out = []
        with evaluating(self):
            # no x still passes through once, for the width of its (0, D) features
            for i in range(0, len(x), batch_size) or range(1):
                xb = x[i:i + batch_size].to(device)
                yb = None if y is None else torch.as_tensor(y)[i:i + batch_size].to(device)
                captured: list[Tensor] = []
                handles = [m.register_forward_hook(
                    lambda mod, inp, o: captured.append(o.flatten(1))) for _, m in layers]
                try:
                    mu = self.encode_mean(xb, yb).flatten(1)            # (B, L)
                finally:
                    for h in handles:
                        h.remove()
                out.append(torch.cat([mu, *captured], dim=1).float())   # (B, D)
        return torch.cat(out)

    def anomaly_score(self, x: Tensor | "np.ndarray", kind: str = "egbad",
                      y: Tensor | None = None, alpha: float = ALPHA,
                      batch_size: int = BATCH_SIZE) -> Tensor:
        """Anomaly scores (N,) of ``x``, higher for more anomalous: the reconstruction
        distance (``l1``, ``l2``), the discriminator-feature distance (``fm``), minus D's logit
        (``logit``) or EGBAD's ``alpha * l1 + (1 - alpha) * fm`` (``egbad``); see
        :mod:`ali.anomaly`."""
        return anomaly_score(self, x, kind, y, alpha, batch_size)

    # ------------------------------------------------------------------ classification
    @property
    def semi_supervised(self) -> bool:
        """Whether D is a K+1 discriminator (K class logits per pair)."""
        return any(isinstance(t, KPlusOneGame) for t in self.objective.terms)

    def need_classifier(self, who: str = "") -> None:
        """A one-line :class:`~ali.errors.DiscriminatorError` unless the model classifies;
        ``who`` names it in the message (``ali eval`` names the run folder)."""
        if not self.semi_supervised:
            raise DiscriminatorError(f"{who or 'this ' + type(self).__name__} is not "
                                     "semi-supervised (train with --set "
                                     "model.semi_supervised=true): only a K+1 discriminator "
                                     "classifies")

    @torch.no_grad()
    def classify(self, x: Tensor) -> Tensor:
        """Class logits (B, K) of a semi-supervised model: its K+1 discriminator on the pair
        (x, mu(x)), the encoder's mean standing in for the sampled z_hat."""
        self.need_classifier()
        return self.discriminator(x, self.encode_mean(x))

    # ------------------------------------------------------------------ saving
    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``model.safetensors`` (the weights) and ``config.json`` (the model's own
        config) into ``directory``; :func:`ali.load` rebuilds the model from them alone,
        without the dataset or the training config."""
        from safetensors.torch import save_file

        from . import __version__

        if self.config is None:
            raise TypeError("this model was not built by ali.build_model: it has no config")
        out = Path(directory)
        if out.exists() and not out.is_dir():
            raise CheckpointError(f"{out} is a file; save_pretrained writes a folder")
        # A run folder's config.json is its training config: overwritten, the run no longer
        # reads back, and ali.load would prefer these weights to its later checkpoints.
        if (out / "checkpoints").is_dir() or ((out / PRETRAINED_CONFIG).exists()
                                              and not (out / PRETRAINED_WEIGHTS).exists()):
            raise CheckpointError(f"{out} holds a run or another {PRETRAINED_CONFIG}, which "
                                  "save_pretrained would overwrite; save into another folder")
        out.mkdir(parents=True, exist_ok=True)
        save_file({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                  str(out / PRETRAINED_WEIGHTS))
        meta = {"format": PRETRAINED_FORMAT, "ali": __version__,
                "model": dataclasses.asdict(self.config)}
        (out / PRETRAINED_CONFIG).write_text(json.dumps(meta, indent=2) + "\n")
        return out

    # ------------------------------------------------------------------ training
    def discriminators(self) -> list[nn.Module]:
        """Every discriminator of the model (see :data:`DISCRIMINATORS`)."""
        return [d for d in (getattr(self, n, None) for n in DISCRIMINATORS) if d is not None]

    def parameters_d(self) -> list[nn.Parameter]:
        """Parameters the discriminator loss ``d`` updates: those of every discriminator."""
        return [p for d in self.discriminators() for p in d.parameters()]

    def parameters_g(self) -> list[nn.Parameter]:
        """Parameters the generator loss ``g`` updates (encoder and decoder)."""
        d = {id(p) for p in self.parameters_d()}
        return [p for p in self.parameters() if id(p) not in d]

    def schedule(self, step: int, total: int) -> None:
        """Called by the engine before each step of ``total``: the objective's phases and
        lazy terms follow the step number (so a resumed run restores them)."""
        if self.objective.schedule(step, total):
            self.train(self.training)

    def train(self, mode: bool = True) -> "GenerativeModel":
        """``nn.Module.train``, keeping the modules the objective's schedule has frozen in
        evaluation mode (batch norm on running statistics, not updated)."""
        super().train(mode)
        if mode:
            for m in self.objective.frozen(self):
                m.eval()
        return self

    def losses(self, x: Tensor, z: Tensor, y: Tensor | None = None,
               labelled: tuple[Tensor, Tensor] | None = None) -> Losses:
        """The losses of one step on data ``x`` (B, *data) and prior draws ``z`` (B, *latent);
        conditional models get the batch's conditions ``y``, semi-supervised ones a labelled
        batch ``(x_l, y_l)``. One forward pass feeds both losses. Feature vectors are
        standardised first (:meth:`standardized`)."""
        return self.objective(self, self.standardized(x), z, y, labelled)

    # ------------------------------------------------------------------ p(x, z)
    def sample_prior(self, n: int) -> Tensor:
        """z ~ p(z) = N(0, I), shape (n, *latent_shape)."""
        n = whole("n", n, 0)
        p = next(self.parameters())
        return torch.randn((n, *self.latent_shape), device=p.device, dtype=p.dtype)

    def decode(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """x_tilde = G(z), or G(z, y) for a conditional model. z of another shape than
        ``(N, *latent_shape)`` is a one-line :class:`~ali.errors.DataError` (it failed deep in
        the networks)."""
        if tuple(z.shape[1:]) != self.latent_shape:
            want = ", ".join(map(str, self.latent_shape))
            # the image models' z is (L, 1, 1): a flat (N, L) is the likely slip
            flat = (z.dim() == 2 and set(self.latent_shape[1:]) == {1}
                    and z.shape[1] == self.latent_shape[0])
            hint = f" (z.view(-1, {want}))" if flat else ""
            raise DataError(f"this model takes z of shape (N, {want}); got {tuple(z.shape)}{hint}")
        return self.decoder(z, *self._cond(y, len(z)))

    @torch.no_grad()
    def sample(self, n: int, y: Tensor | None = None) -> Tensor:
        """n samples x_tilde ~ p(x) (p(x | y) for a conditional model; y defaults to
        :meth:`default_condition`)."""
        n = whole("n", n, 0)
        if y is None:
            y = self.default_condition(n)
        return self.decode(self.sample_prior(n), y)

    def log_ratio(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """The discriminator's logit on pairs (x, z): at its optimum the log density ratio of the
        "real" to the "fake" side, log q(x, z) / p(x, z) for ALI (log p_data(x) / p(x) for a
        GAN, whose discriminator ignores z). Shape (B,), or (B, runs) for run-batched models."""
        if self.discriminator is None:
            raise DiscriminatorError(f"{type(self).__name__} has no discriminator")
        s = self.discriminator(x, z)                                # (B, runs)
        return s.squeeze(1) if self.runs == 1 else s

    @torch.no_grad()
    def sample_resampled(self, n: int, y: Tensor | None = None, oversample: int = 10,
                         chunk: int = 1024) -> Tensor:
        """n samples by sampling-importance-resampling with the discriminator (beyond the
        paper; the density-ratio view of discriminator rejection sampling, Azadi et al. 2019):
        each output is one of ``oversample`` ancestral pairs (G(z), z), drawn with probability
        proportional to exp(:meth:`log_ratio`). With an exact ratio the pairs then follow
        q(x, z), whose x-marginal is the data's; ``oversample`` -> infinity makes the
        resampling exact. Runs of a run-batched model are resampled independently. The
        candidates are decoded ``chunk * oversample`` at a time."""
        oversample, chunk = whole("oversample", oversample), whole("chunk", chunk)
        if oversample < 1 or chunk < 1:
            raise ArgumentError(f"oversample and chunk must be >= 1; got {oversample}, {chunk}")
        n = whole("n", n, 0)
        y = self.default_condition(n) if y is None else self.check_condition(y, n)
        if n == 0:      # no candidates to weigh: their (0, K, -1) view cannot be shaped
            if self.discriminator is None:
                raise DiscriminatorError(f"{type(self).__name__} has no discriminator")
            return self.decode(self.sample_prior(0), y)
        if n > chunk:
            return torch.cat([self.sample_resampled(min(chunk, n - i),
                                                    None if y is None else y[i:i + chunk],
                                                    oversample, chunk)
                              for i in range(0, n, chunk)])
        y_k = None if y is None else y.repeat_interleave(oversample, dim=0)
        z = self.sample_prior(n * oversample)                       # (nK, *latent)
        x = self.decode(z, y_k)                                     # (nK, *data)
        logits = L.fp32(self.log_ratio(x, z, y_k)).reshape(n, oversample, -1)  # (n, K, R)
        pick = torch.multinomial(logits.transpose(1, 2).reshape(-1, oversample).softmax(-1), 1)
        pick = pick.view(n, 1, -1, 1)                               # (n, 1, R, 1)
        runs = pick.shape[2]
        cand = x.reshape(n, oversample, runs, -1)                   # (n, K, R, F)
        out = cand.gather(1, pick.expand(n, 1, runs, cand.shape[-1]))
        return out.reshape(n, *x.shape[1:])                         # (n, *data)

    @torch.no_grad()
    def sample_chain(self, n: int, steps: int, y: Tensor | None = None) -> Tensor:
        """n samples from ``steps`` rounds of the decode-encode Markov chain x -> z_hat ~ q(z|x)
        -> G(z_hat), started at ancestral samples (beyond the paper; Creswell et al., 2016):
        it moves samples drawn where the prior's mass lies outside q(z) onto the encoder's
        latent distribution, which the decoder was trained on. It inherits the reconstructions'
        biases: with ALICE's cycle term they are narrower than the data, and so are its modes."""
        n, steps = whole("n", n), whole("steps", steps, 0)
        if y is None:
            y = self.default_condition(n)
        x = self.sample(n, y)
        for _ in range(steps):
            x = self.decode(self.encode(x, y), y)
        return x

    # ------------------------------------------------------------------ q(x, z)
    def _need_encoder(self) -> StochasticEncoder:
        if self.encoder is None:
            raise EncoderError(f"a {type(self).__name__} has no encoder")
        return self.encoder

    def encode(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """z_hat ~ q(z | x) (q(z | x, y) when conditional), reparametrised so gradients reach
        the encoder."""
        return self._need_encoder()(self._encoder_input(x), *self._cond(y, len(x)))

    def encode_mean(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """A point estimate of z given x (mu for a Gaussian encoder), (B, *latent_shape).

        x of another shape than the networks' is refused in one line (:meth:`check_shape`);
        for flat, detached features of uint8 or [0, 1] images use :meth:`features`."""
        return self._need_encoder().mean(self._encoder_input(x), *self._cond(y, len(x)))

    @torch.no_grad()
    def reconstruct(self, x: Tensor, y: Tensor | None = None) -> Tensor:
        """G(z_hat) with z_hat ~ q(z | x): the paper's reconstructions (Figures 2b-5b)."""
        return self.decode(self.encode(x, y), y)

    @torch.no_grad()
    def interpolate(self, x1: Tensor, x2: Tensor, steps: int, y1: Tensor | None = None,
                    y2: Tensor | None = None) -> Tensor:
        """Decode ``steps`` points on the line from z_hat(x1) to z_hat(x2) (Figure 6); a
        conditional model decodes each point with the condition vector interpolated alike.

        Returns shape (steps, *x1.shape): ``out[0]`` decodes z_hat(x1), ``out[-1]`` z_hat(x2).
        """
        steps = whole("steps", steps)
        if steps < 2:
            raise ArgumentError(f"interpolate needs steps >= 2; got {steps}")
        if len(x1) != len(x2):
            raise ArgumentError(f"x1 and x2 are the two ends of each line: {len(x1)} and "
                                f"{len(x2)} items")
        if self.conditional and (y1 is None or y2 is None):
            raise ConditionError("a conditional model interpolates between (x1, y1) and "
                                 "(x2, y2): give y1 and y2")
        y1, y2 = self.check_condition(y1, len(x1)), self.check_condition(y2, len(x2))
        z1, z2 = self.encode(x1, y1), self.encode(x2, y2)
        t = torch.linspace(0, 1, steps, device=z1.device, dtype=z1.dtype)
        z = torch.lerp(z1, z2, t.view(steps, *([1] * z1.dim())))           # (steps, B, *latent)
        y = None
        if self.conditional:
            v1, v2 = (self.embed.vector(v) for v in (y1, y2))
            y = torch.lerp(v1, v2, t.view(steps, 1, 1)).flatten(0, 1)     # (steps * B, K)
        x = self.decode(z.flatten(0, 1), y)             # (steps * B, *data)
        return x.view(steps, *x1.shape)


class ALI(GenerativeModel):
    """ALI: an encoder q(z|x), a decoder p(x|z) and a joint discriminator D(x, z).

    The objective (:func:`ali.objectives.build_objective`) is the game of Algorithm 1, plus
    whatever terms the config adds (ALICE's cycle term, R1, a K+1 discriminator for
    semi-supervised learning, ALAD's games); ``embed`` makes it conditional ALI (Eq. 7).
    ALAD's discriminators ``d_xx`` (on (x, x')) and ``d_zz`` (on (z, z')) are None without
    ``model.alad``.
    """

    def __init__(self, encoder: StochasticEncoder, decoder: nn.Module,
                 discriminator: JointDiscriminator, latent_shape: tuple[int, ...],
                 objective: Objective | None = None, runs: int = 1,
                 embed: Conditioning | None = None, d_xx: JointDiscriminator | None = None,
                 d_zz: JointDiscriminator | None = None) -> None:
        objective = objective or Objective([JointGame(GEN_LOSS)])
        super().__init__(decoder, latent_shape, objective, encoder=encoder,
                         discriminator=discriminator, embed=embed, runs=runs)
        self.d_xx, self.d_zz = d_xx, d_zz

    def log_ratio(self, x: Tensor, z: Tensor, y: Tensor | None = None) -> Tensor:
        """D's logit on pairs (x, z), its estimate of log q(x, z) / p(x, z): for a K+1
        discriminator logsumexp of the class logits (the fake logit is fixed at 0); for a
        conditional model, of the pairs under condition y."""
        y = self.check_condition(y, len(x))
        v = self.embed.vector(y) if y is not None and self.embed is not None else y
        s = L.fp32(self.discriminator(x, z) if v is None else self.discriminator(x, z, v))
        if self.semi_supervised:                                    # s: (B, K)
            return s.logsumexp(1)
        return s.squeeze(1) if self.runs == 1 else s
