"""A model's training objective, composed of small terms.

An :class:`Objective` is a list of :class:`Term` objects. Each step, :class:`Forward` runs the
model's networks on the batch, computing each quantity once and only when a term first asks for
it; each term then adds to the discriminator loss ``d`` and/or the generator loss ``g``
(:class:`Losses`). A term declares what it needs from the pass (:attr:`Term.needs`) so that
the pass can prepare for it: the cycle term's ``G(z_hat)`` goes through the decoder in its own
pass, batch-normalised apart from ``G(z)`` and leaving the running statistics to the samples,
and R1 gets the discriminator's real input as a gradient leaf.

The terms:

- :class:`JointGame`: ALI's game (Algorithm 1) on D(x, z); :class:`MarginalGame`: a GAN's on
  D(x); :class:`KPlusOneGame`: ALI with a K+1 discriminator (section 4.3).
- :class:`Cycle`: ALICE's ``||x - G(z_hat)||^2`` (Li et al., 2017).
- :class:`R1`: the zero-centred gradient penalty on the real pairs, lazily on one step in K.
- :class:`InverseMapping`: a GAN's encoder regressing z from G(z) (section 2.2).
- :class:`PostHoc`: a GAN first, then inference learned with the ALI game against the frozen
  decoder (section 2.2).
- :class:`ELBO`: the VAE's evidence lower bound.
- :class:`AladGames`: ALAD's D_xx and D_zz games (Zenati et al., 2018).
- :class:`FreezeDecoderBN`: no loss; from a fraction of training on, the decoder's batch norm
  uses its running statistics.

:func:`build_objective` is the one place that reads the variant settings of a model config.
To add a variant, write a term and add it there.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Iterable

import torch
from torch import Tensor, nn

from . import losses as L
from .errors import ConfigError
from .nets.parts import batch_stats_only

if TYPE_CHECKING:
    from .config import ModelConfig

GEN_LOSS = "nonsaturating"
"""The generator loss of Eq. 4 (the original code's), what a model built without a config uses."""


@dataclass
class Losses:
    """What one forward pass produces for the training engine.

    ``d`` is minimised w.r.t. the discriminator's parameters only and ``g`` w.r.t. the
    generator's (encoder and decoder) only; ``stats`` are detached scalars for logging.
    """

    g: Tensor | None = None
    d: Tensor | None = None
    stats: dict[str, Tensor] = field(default_factory=dict)

    def add_g(self, t: Tensor) -> None:
        self.g = t if self.g is None else self.g + t

    def add_d(self, t: Tensor) -> None:
        self.d = t if self.d is None else self.d + t


class Forward:
    """One forward pass on a batch: ``x`` (B, *data), ``z`` (B, *latent) ~ p(z), a conditional
    model's ``y`` and a semi-supervised model's ``labelled`` batch (x_l, y_l).

    ``needs`` is the union of the active terms' :attr:`Term.needs`: ``x_rec`` (decode z_hat
    too, in its own pass), ``real_leaf`` (the discriminator's real input as a gradient leaf, apart
    from the encoder's input, so R1 sees D's gradient only) and ``frozen_decoder`` (G(z) without
    a graph). The games fill :attr:`s_q`, :attr:`s_p` (logits of the real and fake pairs, (B, R))
    and :attr:`real_inputs` (what R1 differentiates).
    """

    def __init__(self, model: Any, x: Tensor, z: Tensor, y: Tensor | None,
                 labelled: tuple[Tensor, Tensor] | None, needs: set[str]) -> None:
        self.model, self.x, self.z, self.labelled, self.needs = model, x, z, labelled, needs
        cond = model.conditioning
        # The (B, K) condition vectors and their embedding (B, E, 1, ...), each made once.
        self.v = cond.vector(y) if cond is not None and y is not None else y
        self.c = model.embedded(self.v)
        self.runs: int = model.runs
        self.s_q: Tensor | None = None
        self.s_p: Tensor | None = None
        self.real_inputs: list[Tensor] = []
        self._cache: dict[str, Tensor] = {}

    def _get(self, key: str, make: Any) -> Tensor:
        if key not in self._cache:
            make()
        return self._cache[key]

    @property
    def z_hat(self) -> Tensor:
        """z_hat ~ q(z | x): (B, *latent)."""
        def make() -> None:
            self._cache["z_hat"] = self.model.encoder(self.x, *self.c)
        return self._get("z_hat", make)

    def _decode(self) -> None:
        dec, c = self.model.decoder, self.c
        if "frozen_decoder" in self.needs:
            with torch.no_grad():
                self._cache["x_tilde"] = dec(self.z, *c)
        elif "x_rec" in self.needs:
            # G(z) and G(z_hat) in two passes, so that each half is batch-normalised with its
            # own statistics (one batch of 2B would normalise the samples with encoder codes
            # mixed in); only the samples' pass moves the running statistics, which sampling
            # uses.
            self._cache["x_tilde"] = dec(self.z, *c)
            with batch_stats_only(dec):
                self._cache["x_rec"] = dec(self.z_hat, *c)
        else:
            self._cache["x_tilde"] = dec(self.z, *c)

    @property
    def x_tilde(self) -> Tensor:
        """x_tilde ~ p(x | z): (B, *data)."""
        return self._get("x_tilde", self._decode)

    @property
    def x_rec(self) -> Tensor:
        """G(z_hat): (B, *data); only when ``x_rec`` is needed."""
        return self._get("x_rec", self._decode)

    @property
    def z_rec(self) -> Tensor:
        """E(G(z)): (B, *latent), the encoder's sample of the decoder's x_tilde."""
        def make() -> None:
            self._cache["z_rec"] = self.model.encoder(self.x_tilde, *self.c)
        return self._get("z_rec", make)

    @property
    def x_real(self) -> Tensor:
        """The discriminator's view of x: a fresh leaf when R1 needs d D / d x."""
        def make() -> None:
            leaf = "real_leaf" in self.needs
            self._cache["x_real"] = self.x.detach().requires_grad_(True) if leaf else self.x
        return self._get("x_real", make)


class Term:
    """A piece of an objective: adds to ``out.d`` and/or ``out.g`` from a :class:`Forward`.

    Terms with phases or schedules implement :meth:`schedule`, which the engine calls (through
    the model) before every step; it returns whether the set of frozen modules changed.
    """

    needs: frozenset[str] = frozenset()

    def schedule(self, step: int, total: int) -> bool:
        return False

    def frozen(self, model: nn.Module) -> list[nn.Module]:
        """Modules to keep in evaluation mode while training (see :meth:`GenerativeModel.train`)."""
        return []

    def __call__(self, f: Forward, out: Losses) -> None:
        raise NotImplementedError


def _adversarial(out: Losses, s_q: Tensor, s_p: Tensor, gen_loss: str,
                 with_d: bool = True, weight: float = 1.0, prefix: str = "") -> None:
    """Algorithm 1's losses on logits of the 'real' pairs ``s_q`` and the 'fake' ones ``s_p``
    (B, R), in fp32 whatever the precision of the forward pass, times ``weight``; the
    accuracies are logged under ``prefix``."""
    s_q, s_p = L.fp32(s_q), L.fp32(s_p)
    if with_d:
        out.add_d(weight * L.discriminator_loss(s_q, s_p))
    out.add_g(weight * L.generator_loss(s_q, s_p, gen_loss))
    out.stats.update({prefix + k: v for k, v in L.discriminator_accuracy(s_q, s_p).items()})


class JointGame(Term):
    """ALI's game: D(x, z) tells (x, z_hat) from (G(z), z), the two halves as one batch of 2B so
    that its batch norm and dropout see both. ``discriminator`` names the model's attribute."""

    def __init__(self, gen_loss: str, discriminator: str = "discriminator") -> None:
        self.gen_loss, self.discriminator = gen_loss, discriminator

    def __call__(self, f: Forward, out: Losses) -> None:
        z_hat, x_tilde, x_d = f.z_hat, f.x_tilde, f.x_real
        d = getattr(f.model, self.discriminator)
        args = [torch.cat([x_d, x_tilde]), torch.cat([z_hat, f.z])]
        if f.v is not None:                                 # the conditions of both halves
            args.append(torch.cat([f.v, f.v]))
        f.s_q, f.s_p = d(*args).chunk(2)                    # (B, R) each
        f.real_inputs = [x_d, z_hat]
        _adversarial(out, f.s_q, f.s_p, self.gen_loss)


class MarginalGame(Term):
    """A GAN's game: D(x) tells x from G(z)."""

    def __init__(self, gen_loss: str) -> None:
        self.gen_loss = gen_loss

    def __call__(self, f: Forward, out: Losses) -> None:
        x_tilde, x_d = f.x_tilde, f.x_real
        f.s_q, f.s_p = f.model.discriminator(torch.cat([x_d, x_tilde])).chunk(2)  # (B, R)
        f.real_inputs = [x_d]
        _adversarial(out, f.s_q, f.s_p, self.gen_loss)


class KPlusOneGame(Term):
    """ALI with a K+1 discriminator (Salimans et al., 2016): D outputs K class logits per pair
    and the "fake" logit is fixed at 0, so D(x, z) = sigmoid(logsumexp(l)). The generator
    plays the usual game on s = logsumexp(l); D's loss is the cross-entropy of a labelled batch
    plus the unsupervised half (:func:`ali.losses.k_plus_one_discriminator_loss`)."""

    needs = frozenset({"labelled"})

    def __init__(self, gen_loss: str) -> None:
        self.gen_loss = gen_loss

    def __call__(self, f: Forward, out: Losses) -> None:
        if f.labelled is None:
            raise ValueError("a semi-supervised model needs a labelled batch")
        x_l, y_l = f.labelled                               # (Bl, *data), (Bl,)
        m, b = f.model, len(f.x)
        z_hat = m.encoder(torch.cat([f.x, x_l]))            # (B + Bl, *latent): one pass
        x_tilde = m.decoder(f.z)                            # (B, *data)
        logits = L.fp32(m.discriminator(torch.cat([f.x, x_tilde, x_l]),
                                        torch.cat([z_hat[:b], f.z, z_hat[b:]])))  # (2B+Bl, K)
        l_q, l_p, l_l = logits.split([b, b, len(x_l)])
        f.s_q, f.s_p = l_q.logsumexp(1, keepdim=True), l_p.logsumexp(1, keepdim=True)  # (B, 1)
        _adversarial(out, f.s_q, f.s_p, self.gen_loss, with_d=False)
        out.add_d(L.k_plus_one_discriminator_loss(l_q, l_p, l_l, y_l))
        out.stats["acc_lab"] = (l_l.detach().argmax(1) == y_l).float().mean()


class Cycle(Term):
    """ALICE's explicit cycle term ``weight * ||x - G(z_hat)||^2`` (summed over an example's
    dimensions) on the generator (Li et al., 2017)."""

    needs = frozenset({"x_rec"})

    def __init__(self, weight: float) -> None:
        self.weight = weight

    def __call__(self, f: Forward, out: Losses) -> None:
        sse = L.per_example_sum((f.x - L.fp32(f.x_rec)).pow(2), f.runs)   # (B, R)
        cycle = L.batch_mean_run_sum(sse)
        out.add_g(self.weight * cycle)
        out.stats["recon_sse"] = cycle.detach() / f.runs


class R1(Term):
    """gamma/2 * E||grad D||^2 at the real pairs (Mescheder et al., 2018), on the
    discriminator; lazily (Karras et al., 2020) on one step in ``every``, weighted by ``every``
    so its average strength is unchanged. Must follow the game it penalises."""

    def __init__(self, gamma: float, every: int = 1) -> None:
        self.gamma, self.every = gamma, every
        self.now = True     # set by schedule() before every step, so resuming restores it

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"real_leaf"}) if self.now else frozenset()

    def schedule(self, step: int, total: int) -> bool:
        self.now = step % self.every == 0
        return False

    def __call__(self, f: Forward, out: Losses) -> None:
        if not self.now:
            return
        penalty = L.r1_penalty(f.s_q, f.real_inputs, f.runs)
        out.add_d(0.5 * self.gamma * self.every * penalty)
        # Reported times ``every``, so its mean over the logging interval stays the penalty's.
        out.stats["r1"] = penalty.detach() * self.every / f.runs


class InverseMapping(Term):
    """The encoder regresses z from the GAN's own samples, ``||z - E(G(z))||^2`` (section 2.2);
    G(z) is detached, so the decoder learns from the GAN game alone. Must follow the game."""

    def __call__(self, f: Forward, out: Losses) -> None:
        z_rec = f.model.encoder(f.x_tilde.detach())         # (B, *latent)
        inverse = L.batch_mean_run_sum(L.per_example_sum((f.z - z_rec).pow(2), f.runs))
        out.add_g(inverse)
        out.stats["inverse_mse"] = inverse.detach() / f.runs


class PostHoc(Term):
    """A GAN for the first ``fraction`` of training; then the decoder is frozen (evaluation
    mode, no gradients) and the encoder plays the ALI game against the model's
    ``joint_discriminator`` (section 2.2, "post-hoc learned inference")."""

    def __init__(self, gen_loss: str, fraction: float) -> None:
        self.fraction = fraction
        self.gan, self.ali = MarginalGame(gen_loss), JointGame(gen_loss, "joint_discriminator")
        self.posthoc = False  # set by schedule() before every step, so resuming restores it

    @property
    def needs(self) -> frozenset[str]:  # type: ignore[override]
        return frozenset({"frozen_decoder"}) if self.posthoc else frozenset()

    def schedule(self, step: int, total: int) -> bool:
        posthoc = step >= int(self.fraction * total)
        changed, self.posthoc = posthoc != self.posthoc, posthoc
        return changed

    def frozen(self, model: nn.Module) -> list[nn.Module]:
        return [model.decoder] if self.posthoc else []

    def __call__(self, f: Forward, out: Losses) -> None:
        (self.ali if self.posthoc else self.gan)(f, out)


class ELBO(Term):
    """The VAE's negative evidence lower bound: ``-log p(x | z_hat) + KL(q(z | x) || p(z))``,
    Gaussian with the model's learned per-dimension scale ``log_sigma_x`` where it has one,
    else Bernoulli (images in [0, 1]). Ignores the prior draws z."""

    def __call__(self, f: Forward, out: Losses) -> None:
        m = f.model
        mu, log_sigma = m.encoder.stats(f.x)                # (B, *latent) each
        z_hat = mu + log_sigma.exp() * torch.randn_like(mu)
        x_mean = m.decoder(z_hat)                           # (B, *data)
        if m.log_sigma_x is not None:
            nll = L.gaussian_nll(f.x, x_mean, m.log_sigma_x)
        else:
            nll = L.bernoulli_nll(f.x, x_mean)
        rec = L.batch_mean_run_sum(L.per_example_sum(nll, f.runs))
        kl = L.batch_mean_run_sum(L.per_example_sum(L.gaussian_kl(mu, log_sigma), f.runs))
        out.add_g(rec + kl)
        out.stats.update({"nll": rec.detach() / f.runs, "kl": kl.detach() / f.runs})


class AladGames(Term):
    """ALAD's two cycle games (Zenati et al., 2018), beside the joint game: D_xx tells the
    pairs (x, x) from (x, G(E(x))) and D_zz tells (z, z) from (z, E(G(z))), each with
    Algorithm 1's losses (the generator's pushes the reconstructions to pass as the identity
    pairs). Each discriminator sees its real and fake pairs as one batch of 2B. D_zz's game
    is left out at ``zz_weight`` 0 (the model then has no ``d_zz``)."""

    needs = frozenset({"x_rec"})

    def __init__(self, gen_loss: str, xx_weight: float, zz_weight: float) -> None:
        self.gen_loss, self.xx_weight, self.zz_weight = gen_loss, xx_weight, zz_weight

    def __call__(self, f: Forward, out: Losses) -> None:
        m, x, z = f.model, f.x, f.z
        s_q, s_p = m.d_xx(torch.cat([x, x]), torch.cat([x, f.x_rec])).chunk(2)    # (B, R)
        _adversarial(out, s_q, s_p, self.gen_loss, weight=self.xx_weight, prefix="xx_")
        if self.zz_weight > 0:
            s_q, s_p = m.d_zz(torch.cat([z, z]), torch.cat([z, f.z_rec])).chunk(2)  # (B, R)
            _adversarial(out, s_q, s_p, self.gen_loss, weight=self.zz_weight, prefix="zz_")


class FreezeDecoderBN(Term):
    """No loss: from ``at`` x the run's steps on, the decoder's batch norm normalises with its
    running statistics, frozen (its scale and shift keep training), so the decoder is trained
    as it will be sampled rather than jittered with the rest of each batch."""

    def __init__(self, at: float) -> None:
        self.at = at
        self.on = False     # set by schedule() before every step, so resuming restores it

    def schedule(self, step: int, total: int) -> bool:
        on = step >= int(self.at * total)
        changed, self.on = on != self.on, on
        return changed

    def frozen(self, model: nn.Module) -> list[nn.Module]:
        if not self.on:
            return []
        return [m for m in model.decoder.modules()
                if isinstance(m, nn.modules.batchnorm._BatchNorm)]

    def __call__(self, f: Forward, out: Losses) -> None:
        pass


class Objective:
    """The terms of a model's objective, applied in order to one shared :class:`Forward`."""

    def __init__(self, terms: Iterable[Term]) -> None:
        self.terms = list(terms)

    def __repr__(self) -> str:
        return f"Objective({', '.join(type(t).__name__ for t in self.terms)})"

    def schedule(self, step: int, total: int) -> bool:
        """Every term's schedule at ``step`` of ``total``; whether the frozen set changed."""
        changed = [t.schedule(step, total) for t in self.terms]
        return any(changed)

    def frozen(self, model: nn.Module) -> list[nn.Module]:
        return [m for t in self.terms for m in t.frozen(model)]

    def __call__(self, model: Any, x: Tensor, z: Tensor, y: Tensor | None = None,
                 labelled: tuple[Tensor, Tensor] | None = None) -> Losses:
        needs = set().union(*(t.needs for t in self.terms))
        f = Forward(model, x, z, y, labelled, needs)
        out = Losses()
        for term in self.terms:
            term(f, out)
        return out


def build_objective(m: "ModelConfig") -> Objective:
    """The objective of model config ``m``: the one place its variant settings are read."""
    terms: list[Term] = []
    if m.kind == "ali":
        terms.append(KPlusOneGame(m.gen_loss) if m.semi_supervised else JointGame(m.gen_loss))
    elif m.kind in ("gan", "gan_inverse"):
        terms.append(MarginalGame(m.gen_loss))
    elif m.kind == "gan_posthoc":
        terms.append(PostHoc(m.gen_loss, m.posthoc_fraction))
    elif m.kind == "vae":
        terms.append(ELBO())
    else:
        raise ConfigError(f"unknown model.kind {m.kind!r}")
    if m.r1 is not None:
        terms.append(R1(m.r1.weight, m.r1.every))
    if m.kind == "gan_inverse":
        terms.append(InverseMapping())
    if m.cycle is not None:
        terms.append(Cycle(m.cycle.weight))
    if m.alad is not None:
        terms.append(AladGames(m.gen_loss, m.alad.xx_weight, m.alad.zz_weight))
    if m.freeze_decoder_bn_at < 1:
        terms.append(FreezeDecoderBN(m.freeze_decoder_bn_at))
    return Objective(terms)
