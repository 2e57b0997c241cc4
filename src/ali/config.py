"""Typed, frozen configurations registered by name.

A :class:`Config` has three sections, ``model``, ``data`` and ``train``. Every hyper-parameter of
a run lives here (nothing is hard-coded in the training loop) and the whole config is written to
the run folder as ``config.json``. Named presets are registered with :func:`register` and looked
up with :func:`get_config`; any field can be overridden as ``section.key=value`` with
:func:`apply_overrides`, which checks the key and the type and fails with one clear line.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import re
import reprlib
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from .errors import ConfigError

MODEL_KINDS = ("ali", "gan", "gan_inverse", "gan_posthoc", "vae")
ENCODER_KINDS = ("gaussian", "deterministic", "noise")
GEN_LOSSES = ("nonsaturating", "saturating")
LR_SCHEDULES = ("constant", "linear")
# The default MNIST model (our design): ALI plus a light ALICE cycle term, sized to the
# 15-minute CPU budget; the weight chosen on the validation split test[8000:9000] among 0.003,
# 0.01 and 0.03 (docs, images.md, "Choosing the MNIST settings on the validation split").
MNIST_STEPS = 6_000
MNIST_RECON = 0.01
# The mnist and folder presets log every 100 steps: a short first run (a few hundred steps)
# still draws its curves in the report, for one host sync per 100 steps.
MNIST_LOG_EVERY = FOLDER_LOG_EVERY = 100
# The 2-D experiment's tuned ALI: the same ALICE cycle term, which puts every held-out point's
# reconstruction in its own component and sharpens the samples, and a weak, lazy R1 penalty,
# which with the discriminator's faster learning rate keeps every mode (README, "2-D
# experiment"); a stronger one (0.3) kept them too but blurred the modes.
TOY_RECON = 1.0
TOY_R1 = 0.01
TOY_R1_EVERY = 8
# ... and the decoder's batch norm frozen at its running statistics for the second half of
# training: samples then stop jittering with the rest of their batch, and sharpen.
TOY_FREEZE_BN = 0.5
# On the ring the grid's cycle weight costs ALI its sample quality (8 modes, but half the samples
# off them); chosen on validation seeds (train.seed=1, 4 runs) among 0 to 1 (docs,
# toy-experiment.md, "the ring").
TOY_RING_RECON = 0.01
# The table preset (feature vectors): small MLPs that train in about a minute on a CPU.
TABLE_LATENT = 8
TABLE_WIDTH = 128
TABLE_STEPS = 2_000
ON_DIVERGENCE = ("stop", "rollback")
ANOMALY_SCORES = ("l1", "l2", "latent", "fm", "logit", "egbad", "alad")
"""The anomaly scores of :mod:`ali.anomaly` (here, so the command line lists them without
importing torch)."""
ANOMALY_BATCH_SIZE = 256
"""Examples per anomaly-scoring forward: on a CPU a batch whose activations stay in cache is
faster than a larger one (the scoring speed in docs/anomaly.md)."""
PRECISIONS = ("auto", "fp32", "bf16", "fp16")
CHANNELS_LAST = ("auto", "on", "off")


def _check(cond: bool, msg: str) -> None:
    if not cond:
        raise ConfigError(msg)


def _one_of(value: str, choices: Iterable[str], key: str) -> None:
    choices = tuple(choices)
    if value not in choices:
        raise ConfigError(f"{key} must be one of {', '.join(choices)}; got {value!r}")


def _weight(value: float, key: str, off: str) -> None:
    """A section's weight: > 0 and finite (switching the section off is how to remove it)."""
    _check(value > 0 and math.isfinite(value),
           f"model.{key} must be > 0 (model.{key.split('.')[0]}=off removes {off}); got {value}")


@dataclass(frozen=True)
class CycleConfig:
    """ALICE's explicit cycle term (Li et al., 2017), beyond the paper: ``weight *
    ||x - G(z_hat)||^2`` (summed over an example's dimensions) added to the generator loss, the
    remedy for unfaithful reconstructions. Absent (the default) is the paper's ALI."""

    weight: float = 1.0

    def __post_init__(self) -> None:
        _weight(self.weight, "cycle.weight", "the term")


@dataclass(frozen=True)
class R1Config:
    """The zero-centred gradient penalty gamma/2 * E||grad D||^2 on the discriminator's real
    inputs (Mescheder et al., 2018; for ALI the pairs (x, z_hat)), beyond the paper, applied
    lazily on one step in ``every``, weighted by ``every`` (Karras et al., 2020)."""

    weight: float = 1.0
    """gamma."""
    every: int = 1

    def __post_init__(self) -> None:
        _weight(self.weight, "r1.weight", "the penalty")
        _check(self.every >= 1, f"model.r1.every must be >= 1; got {self.every}")


@dataclass(frozen=True)
class ConditionalConfig:
    """Conditional ALI (Eq. 7): a class (one-hot) or attribute (0/1) vector y, embedded
    linearly, is given to the encoder, the decoder and the joint discriminator."""

    label_dim: int = 0
    """K, the classes or attributes; 0 = the dataset's (filled in when training starts)."""
    attributes: bool = False
    """y is K 0/1 attributes (CelebA) rather than one of K classes; filled in from the data."""
    embed_dim: int = 64
    """Size of the linear embedding of y (the original CelebA code: 256)."""

    def __post_init__(self) -> None:
        _check(self.label_dim >= 0, f"model.conditional.label_dim must be >= 0; got "
                                    f"{self.label_dim}")
        _check(isinstance(self.attributes, bool), "model.conditional.attributes must be true "
                                                  f"or false; got {self.attributes!r}")
        _check(self.embed_dim >= 1, f"model.conditional.embed_dim must be >= 1; got "
                                    f"{self.embed_dim}")


@dataclass(frozen=True)
class SemiSupervisedConfig:
    """ALI with a K+1 discriminator (section 4.3, Salimans et al. 2016): D scores (x, z) pairs
    into the dataset's K classes, the "fake" logit fixed at 0; a labelled batch (``data.labels``
    examples) adds a cross-entropy term to D's loss. Classify with ``ali eval --metric
    classify``."""

    label_dim: int = 0
    """K, the classes; 0 = the dataset's (filled in when training starts)."""

    def __post_init__(self) -> None:
        _check(self.label_dim >= 0, f"model.semi_supervised.label_dim must be >= 0; got "
                                    f"{self.label_dim}")


@dataclass(frozen=True)
class AladConfig:
    """ALAD (Zenati et al., 2018, "Adversarially Learned Anomaly Detection"), beyond the paper:
    two more discriminators that enforce cycle consistency adversarially. D_xx(x, x') tells the
    pairs (x, x) from (x, G(E(x))), and D_zz(z, z') the pairs (z, z) from (z, E(G(z))); each is
    a game of Algorithm 1's losses, its discriminator loss on D_xx (D_zz) and its generator
    loss on the encoder and decoder. Anomaly score ``alad`` (:mod:`ali.anomaly`)."""

    xx_weight: float = 1.0
    """Weight of D_xx's game (both of its losses)."""
    zz_weight: float = 1.0
    """Weight of D_zz's game; 0 leaves D_zz out (the ALAD code's ``allow_zz=False``)."""

    def __post_init__(self) -> None:
        _weight(self.xx_weight, "alad.xx_weight", "ALAD")
        _check(self.zz_weight >= 0 and math.isfinite(self.zz_weight),
               f"model.alad.zz_weight must be >= 0; got {self.zz_weight}")


# Which optional sections each model kind takes, which sections exclude each other, and which
# need labelled image data: the structure of the variants, as data. ModelConfig checks a
# config against it, so a combination outside it cannot be built.
SECTIONS = {"cycle": CycleConfig, "r1": R1Config, "conditional": ConditionalConfig,
            "semi_supervised": SemiSupervisedConfig, "alad": AladConfig}
SECTIONS_OF_KIND = {"ali": ("cycle", "r1", "conditional", "semi_supervised", "alad"),
                    "gan": ("r1",), "gan_inverse": ("r1",), "gan_posthoc": ("r1",), "vae": ()}
EXCLUSIVE = {"semi_supervised": ("conditional", "cycle", "r1"),
             "alad": ("conditional", "semi_supervised")}
EXCLUSIVE_HINTS = {"semi_supervised": " (or train a preset that sets it up, e.g. mnist_ssl_100, "
                                      "svhn_ssl_1000, cifar10_ssl_1000)"}
"""The presets that already combine a section right, named in the refusal."""
LABELLED_SECTIONS = ("conditional", "semi_supervised")
POINT_FAMILIES = ("toy", "mlp")
"""Network families on vectors (2-D points, feature vectors) rather than images."""
AUTO_NETS = "auto"
"""``model.nets`` of the ``folder`` preset: the family is picked from the data when training
starts (:func:`ali.run.resolve_shape`) and recorded in the run's config."""
AUTO_FAMILIES = {"mnist": 32, "cifar10": 64, "celeba": 256}
"""The families ``model.nets=auto`` chooses from, with the latent size each gets when
``model.latent_dim`` is 0: our small grey 28x28 model and the paper's RGB 32x32 and 64x64 ones
(the latent sizes of their presets)."""


@dataclass(frozen=True)
class ModelConfig:
    """Which model, which networks, and their sizes; variants beyond the plain model are
    optional sections (``cycle``, ``r1``, ``conditional``, ``semi_supervised``), absent when off."""

    kind: str = "ali"
    """ali | gan | gan_inverse | gan_posthoc | vae."""
    nets: str = "toy"
    """Network family: a module of :mod:`ali.nets`; auto (the ``folder`` preset): the family
    of mnist, cifar10 or celeba nearest to the data's channels and image size, chosen when
    training starts."""
    latent_dim: int = 2
    """Size of z; 0 (with nets=auto only): the chosen family's preset's."""
    data_dim: int = 0
    """mlp family: the features of one vector; 0 = the data's (filled in when training starts).
    The other families fix their data shape."""
    encoder: str = "noise"
    """gaussian: q(z|x) = N(mu, sigma^2) reparametrised (the paper's image models);
    deterministic: z_hat = E(x) (BiGAN); noise: z_hat = E(concat(x, eps)) (the paper's toy)."""
    noise_dim: int = 2
    """Size of eps for the noise-input encoder."""
    gen_loss: str = "nonsaturating"
    """nonsaturating (Eq. 4, the original code) or saturating (Eq. 1)."""
    width: int = 400
    """Hidden units of the encoder/decoder MLPs (toy family)."""
    disc_width: int = 200
    """Units after maxout in each discriminator layer (toy family)."""
    disc_layers: int = 3
    maxout_pieces: int = 5
    init_std: float = 0.02
    """Std of the N(0, s) weight initialisation."""
    runs: int = 1
    """Independent copies of the model trained side by side as one batched computation
    (toy family only): run r sees its own data and noise and has its own parameters."""
    posthoc_fraction: float = 0.5
    """gan_posthoc: fraction of train.steps spent on the GAN before inference is learned."""
    freeze_decoder_bn_at: float = 1.0
    """Beyond the paper: from this fraction of ``train.steps`` on, the decoder's batch-norm
    layers normalise with their running statistics, frozen, instead of each batch's. The
    batch's statistics jitter every sample with the rest of its batch (at batch 32 the toy
    decoder's samples are visibly wider with them than with the running ones); frozen, the
    decoder is trained as it will be sampled. Its affine parameters keep training.
    1 (default) never freezes them."""
    dropout: bool = True
    """Image families: the discriminator's dropout as the paper's tables give it; false turns
    every dropout layer off (the toy networks have none)."""
    channel_scale: float = 1.0
    """Image families: every hidden layer's feature maps times this (1: the paper's tables).
    Small values make tiny networks of the same shape, for smoke runs and tests."""
    spectral_norm: bool = False
    """Beyond the paper: spectral normalisation (Miyato et al., 2018) of every weight of every
    discriminator (D, a GAN's D(x), ALAD's D_xx and D_zz), for any adversarial model; with
    ``runs`` > 1, each run's weights by their own norm."""
    cycle: CycleConfig | None = None
    """ALI: ALICE's cycle term (``model.cycle.weight``); None: off."""
    r1: R1Config | None = None
    """Adversarial models: the R1 penalty (``model.r1.weight``, ``model.r1.every``); None: off."""
    conditional: ConditionalConfig | None = None
    """ALI on image networks: conditional ALI (Eq. 7); None: unconditional."""
    semi_supervised: SemiSupervisedConfig | None = None
    """ALI on image networks: the K+1 discriminator of section 4.3; None: off."""
    alad: AladConfig | None = None
    """ALI: ALAD's D_xx and D_zz games (``model.alad.xx_weight``, ``model.alad.zz_weight``);
    None: off."""

    def __post_init__(self) -> None:
        _one_of(self.kind, MODEL_KINDS, "model.kind")
        _one_of(self.encoder, ENCODER_KINDS, "model.encoder")
        _one_of(self.gen_loss, GEN_LOSSES, "model.gen_loss")
        for key in ("width", "disc_width", "disc_layers", "maxout_pieces", "runs"):
            _check(getattr(self, key) >= 1, f"model.{key} must be >= 1; got {getattr(self, key)}")
        _check(self.latent_dim >= 1 or (self.latent_dim == 0 and self.nets == AUTO_NETS),
               f"model.latent_dim must be >= 1 (0 only with model.nets=auto); got "
               f"{self.latent_dim}")
        _check(self.data_dim >= 0, f"model.data_dim must be >= 0; got {self.data_dim}")
        _check(isinstance(self.spectral_norm, bool),
               f"model.spectral_norm must be true or false; got {self.spectral_norm!r}")
        _check(not self.spectral_norm or self.kind != "vae",
               "model.spectral_norm needs a discriminator, and model.kind=vae has none")
        _check(self.noise_dim >= 0, f"model.noise_dim must be >= 0; got {self.noise_dim}")
        _check(self.init_std > 0, f"model.init_std must be > 0; got {self.init_std}")
        _check(0 <= self.freeze_decoder_bn_at <= 1,
               f"model.freeze_decoder_bn_at must be in [0, 1]; got {self.freeze_decoder_bn_at}")
        _check(0 < self.posthoc_fraction < 1,
               f"model.posthoc_fraction must be in (0, 1); got {self.posthoc_fraction}")
        _check(isinstance(self.dropout, bool), f"model.dropout must be true or false; got "
                                                f"{self.dropout!r}")
        _check(0 < self.channel_scale <= 1,
               f"model.channel_scale must be in (0, 1]; got {self.channel_scale}")
        _check(self.channel_scale == 1 or self.images,
               f"model.channel_scale applies to image networks (model.nets={self.nets} works "
               "on vectors)")
        on = [k for k in SECTIONS if getattr(self, k) is not None]
        for key in on:
            _check(isinstance(getattr(self, key), SECTIONS[key]),
                   f"model.{key} must be a section or off")
            takes = SECTIONS_OF_KIND[self.kind]
            _check(key in takes, f"model.{key} does not apply to model.kind={self.kind} (it "
                   f"applies to {', '.join(k for k, v in SECTIONS_OF_KIND.items() if key in v)}"
                   f"); add --set model.{key}=off")
            for other in EXCLUSIVE.get(key, ()):
                _check(getattr(self, other) is None,
                       f"model.{key} cannot be combined with model.{other}; add --set "
                       f"model.{other}=off" + EXCLUSIVE_HINTS.get(key, ""))
            _check(key not in LABELLED_SECTIONS or self.images,
                   f"model.{key} needs image networks (model.nets={self.nets} is the 2-D "
                   "family)")
        if self.kind == "vae":
            _check(self.encoder == "gaussian",
                   "model.kind=vae needs model.encoder=gaussian (the KL term needs mu and sigma)")

    @property
    def images(self) -> bool:
        """Whether the networks take images (every family but the 2-D one, ``toy``)."""
        return self.nets not in POINT_FAMILIES

    # The model's labels, wherever they live: what the networks and the data pipeline need.
    @property
    def labels(self) -> ConditionalConfig | SemiSupervisedConfig | None:
        """The section that makes the model read labels (conditional or semi-supervised)."""
        return self.conditional or self.semi_supervised

    @property
    def label_dim(self) -> int:
        """K of the labelled section (0: none, or not yet filled in from the data)."""
        return self.labels.label_dim if self.labels is not None else 0

    @property
    def attributes(self) -> bool:
        return self.conditional is not None and self.conditional.attributes

    @property
    def embed_dim(self) -> int:
        return self.conditional.embed_dim if self.conditional is not None else 0

    def with_labels(self, label_dim: int, attributes: bool = False) -> "ModelConfig":
        """This config with the labelled section's K (and attributes) filled in."""
        if self.conditional is not None:
            sec = dataclasses.replace(self.conditional, label_dim=label_dim,
                                      attributes=attributes)
            return dataclasses.replace(self, conditional=sec)
        if self.semi_supervised is not None:
            return dataclasses.replace(self, semi_supervised=dataclasses.replace(
                self.semi_supervised, label_dim=label_dim))
        return self


DATA_NAMES = ("grid", "ring", "mnist", "cifar10", "svhn", "celeba", "imagenet64", "folder", "npz",
              "table")
STREAM_MODES = ("auto", "on", "off")
CACHE_MODES = ("auto", "on", "off")
SPLIT_ORDERS = ("auto", "shuffled", "stored")
SHUFFLED_BY_DEFAULT = ("folder", "npz", "table")
"""Datasets whose splits ``data.split_order=auto`` shuffles before cutting them: a user's files
have no meaningful order (a folder is read class by class, so an unshuffled range would hold
out whole classes). The standard datasets keep their official order, which their protocols'
ranges (mnist ``test[9000:]``, cifar10 ``train[0:45000]``) name positions in."""
DEFAULT_HOLDOUT = 0.05
_RANGE = re.compile(r"^\s*(-?\d+)?\s*:\s*(-?\d+)?\s*$")
_SPLIT = re.compile(r"^[a-z0-9_]+(\+[a-z0-9_]+)*$")


def parse_range(text: str) -> tuple[int | None, int | None]:
    """``"start:stop"`` (either end may be empty or negative, as a Python slice) as a pair;
    ``""`` is everything, ``(None, None)``."""
    if not text.strip():
        return None, None
    m = _RANGE.match(text)
    if m is None:
        raise ConfigError(f"a range must look like start:stop (e.g. 0:9000 or -1000:); got {text!r}")
    return tuple(None if g is None else int(g) for g in m.groups())  # type: ignore[return-value]


@dataclass(frozen=True)
class DataConfig:
    """Where the data comes from (README, "Datasets")."""

    name: str = "grid"
    """grid (25 Gaussians) | ring (8 Gaussians) | mnist | cifar10 | svhn | celeba | imagenet64 |
    folder | npz | table (feature vectors: a CSV or npz file, or a folder of train.csv and
    test.csv)."""
    root: str = ""
    """Folder holding the dataset's official files (npz, table: the file itself)."""
    label_column: str = ""
    """table, CSV: the column of class labels, by header name or 0-based index (integers, or
    names numbered in sorted order); empty: no labels. An npz table's labels are its y arrays.
    A first row of numbers is data, not a header, unless this names one of its values that
    cannot be an index of it (4 of 1,2,3,4): give columns names that are not numbers."""
    n_train: int = 100_000
    """2-D datasets: training points."""
    n_test: int = 10_000
    """2-D datasets: held-out points."""
    std: float = 0.0
    """Std of each mixture component; 0 means the dataset's standard value."""
    seed: int = 1234
    """Seed of the fixed training/held-out sets (independent of train.seed)."""
    image_size: int = 0
    """Images: side of the square images after resizing (and cropping); 0 = the dataset's own
    (celeba: 64, the authors' crop)."""
    channels: int = 0
    """Images: 1 (grey) or 3 (RGB); 0 = the dataset's own."""
    train_split: str = "train"
    """Images: the split(s) to train on, e.g. train, valid, test, extra; join with + (train+extra)."""
    test_split: str = "test"
    """Images: the held-out split(s); empty for none."""
    train_range: str = ""
    """Images: start:stop, the part of train_split used (Python slice; empty = all), e.g. 0:9000."""
    test_range: str = ""
    """Images: start:stop, the part of test_split used, e.g. 9000: or -1000:."""
    split_order: str = "auto"
    """Images: the order train_range, test_range and holdout cut a split in: shuffled (a
    permutation fixed by data.split_seed) | stored (the files' order) | auto: shuffled for
    folder and npz data, stored for the standard datasets (whose protocols name positions in
    their official order, e.g. mnist test[9000:])."""
    split_seed: int = 0
    """Seed of the shuffled order of data.split_order (independent of data.seed and
    train.seed): the same seed gives the same training and held-out items."""
    holdout: float = DEFAULT_HOLDOUT
    """Images: when the data has no test_split (a folder without test/ or valid/ subfolders,
    an npz file without x_test), hold out this fraction of the training split instead, the
    same fraction of every class, chosen with data.split_seed; 0 refuses such data (set
    data.test_split= to train without a held-out set). Ignored where test_split exists."""
    labels: int = 0
    """Images with class labels: keep the labels of this many training examples, the same number
    per class (the others get label -1); 0 keeps all."""
    stream: str = "auto"
    """Images: on decodes image files on the fly in DataLoader workers; off decodes all at load
    into one tensor; auto streams celeba, imagenet64 and folders of more than 20,000 images.
    Data read into memory whole (mnist, cifar10, svhn, npz, table, grid, ring) is never
    streamed: on is ignored there, with a warning on stderr."""
    workers: int = -1
    """DataLoader worker processes for streamed data decoded on the fly (data.cache=off): -1 =
    one per CPU core this process may use (at most 8); 0 decodes in the training process.
    More than the cores this process may use decode with one per core (said on stderr)."""
    cache: str = "auto"
    """Decode once: auto caches streamed image files (celeba, imagenet64 folders, large
    folders), decoded and cropped once in parallel into a memory-mapped uint8 array in
    data.cache_dir, rebuilt when a source file changes; on caches every dataset of image files
    (and fails when the cache cannot be written); off decodes on the fly every epoch. Data with
    no image files (mnist, cifar10, svhn, npz, table, grid, ring) has nothing to cache: on is
    ignored there, with a warning on stderr."""
    cache_dir: str = ""
    """Folder of the decode-once caches; empty = $ALI_CACHE_DIR, else $XDG_CACHE_HOME/ali, else
    ~/.cache/ali."""
    verify: bool = True
    """Check the official files' md5 checksums where the release publishes them."""
    normal_class: int = -1
    """Anomaly detection's one-class protocol: keep only class K in the training split (the
    held-out split keeps every class); -1 keeps every class."""

    def __post_init__(self) -> None:
        _one_of(self.name, DATA_NAMES, "data.name")
        _check(self.n_train >= 1, f"data.n_train must be >= 1; got {self.n_train}")
        _check(self.n_test >= 1, f"data.n_test must be >= 1; got {self.n_test}")
        _check(self.std >= 0, f"data.std must be >= 0; got {self.std}")
        _check(self.image_size >= 0, f"data.image_size must be >= 0; got {self.image_size}")
        _check(self.channels in (0, 1, 3), f"data.channels must be 0, 1 or 3; got {self.channels}")
        _check(self.labels >= 0, f"data.labels must be >= 0; got {self.labels}")
        _check(self.workers >= -1, f"data.workers must be >= 0, or -1 for one per core; got "
                                   f"{self.workers}")
        _check(self.normal_class >= -1,
               f"data.normal_class must be a class index, or -1 for all; got {self.normal_class}")
        _one_of(self.stream, STREAM_MODES, "data.stream")
        _one_of(self.cache, CACHE_MODES, "data.cache")
        _one_of(self.split_order, SPLIT_ORDERS, "data.split_order")
        _check(0 <= self.holdout < 1 and math.isfinite(self.holdout),
               f"data.holdout must be a fraction in [0, 1); got {self.holdout}")
        for key in ("train_split", "test_split"):
            v = getattr(self, key)
            _check(bool(_SPLIT.match(v)) or (key == "test_split" and v == ""),
                   f"data.{key} must be a split name or names joined by + (e.g. train+extra); "
                   f"got {v!r}")
        for key in ("train_range", "test_range"):
            v = getattr(self, key)
            _check(_RANGE.match(v) is not None or not v.strip(),
                   f"data.{key} must look like start:stop (e.g. 0:9000 or -1000:); got {v!r}")


@dataclass(frozen=True)
class TrainConfig:
    """How long and how the networks are optimised (Adam, PyTorch's beta convention)."""

    steps: int = 20_000
    """Total parameter updates."""
    batch_size: int = 100
    lr: float = 1e-4
    lr_d: float | None = None
    """Learning rate of the discriminator; None means train.lr (the paper)."""
    lr_schedule: str = "constant"
    """constant (the paper) or linear decay to zero over train.steps."""
    beta1: float = 0.2
    beta2: float = 0.999
    seed: int = 0
    device: str = "auto"
    """auto (cuda if available, else cpu) | cpu | cuda | cuda:N."""
    log_every: int = 500
    checkpoint_every: int = 5_000
    progress: str = "auto"
    """auto: a bar on a terminal, else (nohup, Slurm, a CI log) a line every
    train.progress_every_s seconds | on: the bar | off: neither (the log records only)."""
    progress_every_s: float = 30.0
    """Without a bar: the most seconds between two progress lines (step, rate, ETA, losses);
    the first comes after the first step. A log record printed meanwhile counts as one."""
    keep_checkpoints: int = 3
    """How many ``checkpoints/step-NNNNNNNN.pt`` files to keep (the newest); ``latest.pt`` is
    always kept besides them."""
    on_divergence: str = "stop"
    """What a non-finite loss or parameter does: stop (raise DivergenceError, keeping the last
    good checkpoint) or rollback (reload the last good checkpoint and continue with the learning
    rates multiplied by train.rollback_lr_factor)."""
    rollback_lr_factor: float = 0.5
    """Multiplier of the learning rates at each rollback, in (0, 1)."""
    max_rollbacks: int = 3
    """Rollbacks allowed in a run (resumes included) before a divergence stops it."""
    labelled_batch_size: int = 0
    """Semi-supervised ALI: labelled examples per step (besides train.batch_size unlabelled
    ones); 0 = train.batch_size, or all the labelled examples when there are fewer."""
    precision: str = "auto"
    """Arithmetic of the forward pass (autocast; losses, weights and optimiser stay fp32):
    fp32 | bf16 (CPU and GPU) | fp16 (GPU only, with loss scaling) | auto: fp32 on a CPU (so that
    a run is reproducible); on a GPU with bf16, a short probe before training times the step in
    fp32 and bf16 and takes bf16 only where it is train.bf16_min_speedup times faster and its
    losses agree with fp32's; the choice and the timings are recorded in config.json's ``run``
    section, and a resumed run keeps it."""
    bf16_min_speedup: float = 1.1
    """precision=auto: how much faster (fp32 step time / bf16 step time) bf16 must be to be
    chosen; a margin, so that timing noise does not flip the choice."""
    bf16_loss_tolerance: float = 0.05
    """precision=auto: the largest relative difference between the bf16 and fp32 losses of the
    probe's first step (same parameters, batch and dropout masks) with which bf16 is chosen."""
    precision_probe_steps: int = 3
    """precision=auto: timed steps of each precision in the probe (after one warm-up step;
    the median is compared)."""
    precision_probe_min_ms: float = 20.0
    """precision=auto: an fp32 step shorter than this (ms) keeps fp32 without timing bf16
    (overhead-bound steps gain nothing from mixed precision, and their timings are noise)."""
    compile: bool = False
    """Compile the forward pass with torch.compile (needs a C++ compiler on a CPU; measured
    slower than eager on a 2-core CPU, hence off by default)."""
    channels_last: str = "auto"
    """Image networks in channels-last memory format: on | off | auto (on: measured faster on a
    CPU, and what GPU tensor cores want)."""

    def __post_init__(self) -> None:
        _check(self.steps >= 1, f"train.steps must be >= 1; got {self.steps}")
        _check(self.batch_size >= 1, f"train.batch_size must be >= 1; got {self.batch_size}")
        _check(self.lr > 0 and math.isfinite(self.lr), f"train.lr must be > 0; got {self.lr}")
        _check(self.lr_d is None or (self.lr_d > 0 and math.isfinite(self.lr_d)),
               f"train.lr_d must be > 0; got {self.lr_d}")
        _one_of(self.lr_schedule, LR_SCHEDULES, "train.lr_schedule")
        for key in ("beta1", "beta2"):
            v = getattr(self, key)
            _check(0 <= v < 1, f"train.{key} must be in [0, 1); got {v}")
        _check(self.log_every >= 1, f"train.log_every must be >= 1; got {self.log_every}")
        _check(self.checkpoint_every >= 1,
               f"train.checkpoint_every must be >= 1; got {self.checkpoint_every}")
        _one_of(self.progress, ("auto", "on", "off"), "train.progress")
        _check(self.progress_every_s > 0 and math.isfinite(self.progress_every_s),
               f"train.progress_every_s must be > 0; got {self.progress_every_s}")
        _check(self.keep_checkpoints >= 1,
               f"train.keep_checkpoints must be >= 1; got {self.keep_checkpoints}")
        _one_of(self.on_divergence, ON_DIVERGENCE, "train.on_divergence")
        _check(0 < self.rollback_lr_factor < 1,
               f"train.rollback_lr_factor must be in (0, 1); got {self.rollback_lr_factor}")
        _check(self.labelled_batch_size >= 0,
               f"train.labelled_batch_size must be >= 0; got {self.labelled_batch_size}")
        _check(self.max_rollbacks >= 0,
               f"train.max_rollbacks must be >= 0; got {self.max_rollbacks}")
        _check(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
               f"train.device must be auto, cpu or cuda[:N]; got {self.device!r}")
        _one_of(self.precision, PRECISIONS, "train.precision")
        _check(self.bf16_min_speedup > 0 and math.isfinite(self.bf16_min_speedup),
               f"train.bf16_min_speedup must be > 0; got {self.bf16_min_speedup}")
        _check(self.bf16_loss_tolerance >= 0 and math.isfinite(self.bf16_loss_tolerance),
               f"train.bf16_loss_tolerance must be >= 0; got {self.bf16_loss_tolerance}")
        _check(self.precision_probe_steps >= 1,
               f"train.precision_probe_steps must be >= 1; got {self.precision_probe_steps}")
        _check(self.precision_probe_min_ms >= 0 and math.isfinite(self.precision_probe_min_ms),
               f"train.precision_probe_min_ms must be >= 0; got {self.precision_probe_min_ms}")
        _check(not (self.precision == "fp16" and self.device == "cpu"),
               "train.precision=fp16 needs a GPU (train.device=cuda); use bf16 on a CPU")
        _check(isinstance(self.compile, bool),
               f"train.compile must be true or false; got {self.compile!r}")
        _one_of(self.channels_last, CHANNELS_LAST, "train.channels_last")


@dataclass(frozen=True)
class Config:
    """A complete run description."""

    name: str = "toy"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "Config":
        """Rebuild a config from :meth:`to_dict` output (e.g. a run's ``config.json``, whose
        ``run`` record of how the run ran (processes, precision, ...) is not part of it)."""
        if not isinstance(d, dict):
            raise ConfigError("a config must be a JSON object")
        top = {f.name for f in dataclasses.fields(cls)}
        unknown_top = sorted((k for k in d if k not in top and k != "run"), key=repr)
        if unknown_top:
            raise ConfigError(f"unknown config section {reprlib.repr(unknown_top[0])} "
                              f"(known: {', '.join(sorted(top))})")
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name not in d:
                continue
            section_cls = _section_types().get(f.name)
            if section_cls is None:
                kwargs[f.name] = _coerce(f.name, d[f.name], str)
                continue
            sec = d[f.name]
            if not isinstance(sec, dict):
                raise ConfigError(f"config section {f.name!r} must be an object")
            if f.name == "model":
                kwargs[f.name] = model_from_dict(sec)
                continue
            hints = typing.get_type_hints(section_cls)
            unknown = sorted((k for k in sec if k not in hints), key=repr)
            if unknown:
                raise ConfigError(_unknown_key_message(f"{f.name}.{unknown[0]}"))
            # A hand-edited or damaged config.json may hold any JSON value: check each type
            # here, so __post_init__ only ever compares values of the declared type.
            sec = {**WRITTEN_BEFORE.get(f.name, {}), **sec}
            kwargs[f.name] = section_cls(**{k: _coerce(f"{f.name}.{k}", v, hints[k])
                                            for k, v in sec.items()})
        return cls(**kwargs)


def _coerce(key: str, value: Any, typ: Any) -> Any:
    """``value`` (from JSON) as the declared type ``typ`` of ``key``, or a ConfigError."""
    if typing.get_origin(typ) in (typing.Union, types.UnionType):
        if value is None:
            return None
        return _coerce(key, value, [a for a in typing.get_args(typ) if a is not type(None)][0])
    shown = reprlib.repr(value)
    if typ is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} expects a boolean; got {shown}")
    if typ is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and math.isfinite(value) and value == int(value):
            return int(value)
        raise ConfigError(f"{key} expects an integer; got {shown}")
    if typ is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                v = float(value)
            except OverflowError:
                v = math.inf
            if math.isfinite(v):
                return v
            raise ConfigError(f"{key} expects a finite number; got {shown}")
        raise ConfigError(f"{key} expects a number; got {shown}")
    if typ is str:
        if isinstance(value, str):
            return value
        raise ConfigError(f"{key} expects a string; got {shown}")
    return value


def _section_types() -> dict[str, type]:
    return {"model": ModelConfig, "data": DataConfig, "train": TrainConfig}


WRITTEN_BEFORE: dict[str, dict[str, Any]] = {"data": {"split_order": "stored"}}
"""Settings whose default is not what runs written before the setting existed ran with: a saved
config without them means these values (before ``data.split_order``, folders and npz files
were cut in their stored order; reading such a run with today's default would change its
training and held-out items)."""


def saved_defaults(section: str) -> dict[str, Any]:
    """What a saved config's missing settings of ``section`` mean: the defaults, except
    :data:`WRITTEN_BEFORE`."""
    return {**section_defaults(section), **WRITTEN_BEFORE.get(section, {})}


def section_defaults(section: str) -> dict[str, Any]:
    """The default of every setting of ``section`` (``model``, ``data`` or ``train``): what a
    run written before a setting existed ran with."""
    return {f.name: f.default for f in dataclasses.fields(_section_types()[section])
            if f.default is not dataclasses.MISSING}


# --------------------------------------------------------------------------- registry

_REGISTRY: dict[str, Callable[[], Config]] = {}


def register(name: str) -> Callable[[Callable[[], Config]], Callable[[], Config]]:
    """Register a preset: ``@register("toy") def toy() -> Config: ...``."""

    def deco(fn: Callable[[], Config]) -> Callable[[], Config]:
        _REGISTRY[name] = fn
        return fn

    return deco


def config_names() -> list[str]:
    return sorted(_REGISTRY)


def get_config(name: str, overrides: Iterable[str] = ()) -> Config:
    """The preset ``name`` with ``section.key=value`` overrides applied."""
    if name not in _REGISTRY:
        close = difflib.get_close_matches(name, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ConfigError(
            f"unknown config {name!r}{hint} (known: {', '.join(config_names())})")
    cfg = _REGISTRY[name]()
    return apply_overrides(cfg, overrides)


# --------------------------------------------------------------------------- overrides

def all_keys() -> list[str]:
    """Every overridable ``section.key`` (a model section's keys as ``model.cycle.weight``)."""
    keys = []
    for s, t in _section_types().items():
        for f in dataclasses.fields(t):
            keys.append(f"{s}.{f.name}")
            if s == "model" and f.name in SECTIONS:
                keys += [f"model.{f.name}.{g.name}" for g in dataclasses.fields(SECTIONS[f.name])]
    return keys + [f"model.{k}" for k in LEGACY_MODEL_KEYS]


def _unknown_key_message(key: str) -> str:
    close = difflib.get_close_matches(key, all_keys(), n=1, cutoff=0.5)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return f"unknown config key {key!r}{hint}"


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", "none", "null"}

# Keys of the flat model config before the variant sections: each still works, as the
# (section, field) it now sets. recon_weight and r1_weight turn their section on (off at 0);
# the others set a field of a section only where that section is on (they were no-ops
# otherwise, and a run's config.json may hold them so); label_dim goes to whichever labelled
# section is on, and on the command line a label_dim other than 0 with neither on is refused.
LEGACY_MODEL_KEYS = {"recon_weight": ("cycle", "weight", float),
                     "r1_weight": ("r1", "weight", float),
                     "r1_every": ("r1", "every", int),
                     "label_dim": (None, "label_dim", int),
                     "attributes": ("conditional", "attributes", bool),
                     "embed_dim": ("conditional", "embed_dim", int)}


class _ModelChanges:
    """Model-section changes gathered in order, then applied to a ModelConfig at once: the
    plain fields, the sections switched on or off, and the fields set inside sections."""

    def __init__(self) -> None:
        self.fields: dict[str, Any] = {}
        self.toggles: dict[str, bool] = {}
        self.inner: dict[str, dict[str, Any]] = {}      # set inside a section, turning it on
        self.soft: list[tuple[str | None, str, Any]] = []  # set only where the section is on
        self.unused: list[tuple[str | None, str, Any]] = []  # of soft: no section was on

    def toggle(self, section: str, on: bool) -> None:
        """Switch ``section`` on (keeping its settings) or off (dropping those set so far)."""
        self.toggles[section] = on
        if not on:
            self.inner.pop(section, None)

    def set(self, section: str, name: str, value: Any) -> None:
        """Set a field of ``section``, switching it on."""
        self.toggles[section] = True
        self.inner.setdefault(section, {})[name] = value

    def legacy(self, key: str, value: Any) -> None:
        section, name, _ = LEGACY_MODEL_KEYS[key]
        if section in ("cycle", "r1") and name == "weight":
            _check(value >= 0, f"model.{key} must be >= 0; got {value}")
            if value > 0:
                self.set(section, name, value)
            else:
                self.toggle(section, False)
        else:
            if name == "every":
                _check(value >= 1, f"model.{key} must be >= 1; got {value}")
            self.soft.append((section, name, value))

    def apply(self, m: ModelConfig) -> ModelConfig:
        values = {f.name: getattr(m, f.name) for f in dataclasses.fields(m)}
        values.update(self.fields)
        for sec, on in self.toggles.items():
            if not on:
                values[sec] = None
            elif values[sec] is None:
                values[sec] = SECTIONS[sec]()
        for sec, inner in self.inner.items():
            base = values[sec] if values[sec] is not None else SECTIONS[sec]()
            values[sec] = dataclasses.replace(base, **inner)
        for sec, name, value in self.soft:
            targets = [t for t in ([sec] if sec else LABELLED_SECTIONS) if values[t] is not None]
            for t in targets:
                values[t] = dataclasses.replace(values[t], **{name: value})
            if not targets:
                self.unused.append((sec, name, value))
        return ModelConfig(**values)


def model_from_dict(d: dict[str, Any]) -> ModelConfig:
    """A ModelConfig from its JSON form, including the flat form of runs written before the
    variant sections (``recon_weight``, ``r1_weight``, ``conditional: true``, ...)."""
    hints = typing.get_type_hints(ModelConfig)
    changes = _ModelChanges()
    for k, v in d.items():
        if k in LEGACY_MODEL_KEYS:
            changes.legacy(k, _coerce(f"model.{k}", v, LEGACY_MODEL_KEYS[k][2]))
        elif k in SECTIONS:
            if v is None or isinstance(v, bool):          # a flat-era flag, or off
                changes.toggle(k, bool(v))
            elif isinstance(v, dict):
                changes.toggle(k, True)
                sec_hints = typing.get_type_hints(SECTIONS[k])
                unknown = sorted((x for x in v if x not in sec_hints), key=repr)
                if unknown:
                    raise ConfigError(_unknown_key_message(f"model.{k}.{unknown[0]}"))
                changes.inner[k] = {x: _coerce(f"model.{k}.{x}", y, sec_hints[x])
                                    for x, y in v.items()}
            else:
                raise ConfigError(f"model.{k} must be an object, null or a boolean; got "
                                  f"{reprlib.repr(v)}")
        elif k in hints:
            changes.fields[k] = _coerce(f"model.{k}", v, hints[k])
        else:
            raise ConfigError(_unknown_key_message(f"model.{k}"))
    return changes.apply(ModelConfig())


def _parse_value(key: str, text: str, typ: Any) -> Any:
    origin = typing.get_origin(typ)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(typ) if a is not type(None)]
        if text.lower() in ("none", "null"):
            return None
        return _parse_value(key, text, args[0])
    if typ is bool:
        low = text.lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(f"{key} expects a boolean (true/false); got {text!r}")
    if typ is int:
        try:
            return int(text)
        except ValueError:
            try:
                f = float(text)
            except ValueError:
                f = math.nan
            if math.isfinite(f) and f == int(f):
                return int(f)
            raise ConfigError(f"{key} expects an integer; got {text!r}") from None
    if typ is float:
        try:
            v = float(text)
        except ValueError:
            raise ConfigError(f"{key} expects a number; got {text!r}") from None
        if not math.isfinite(v):
            raise ConfigError(f"{key} expects a finite number; got {text!r}")
        return v
    return text


def apply_overrides(cfg: Config, overrides: Iterable[str]) -> Config:
    """Return ``cfg`` with each ``section.key=value`` applied, type-checked and validated.

    All overrides are applied before validation, so checks that involve several keys (e.g.
    ``model.kind=vae`` with ``model.encoder=gaussian``) see the final values. A model section
    is switched with ``model.cycle=on|off`` and set with ``model.cycle.weight=0.5`` (which
    switches it on); the flat keys of earlier versions (``model.recon_weight=0.5``) still work.
    """
    hints = {name: typing.get_type_hints(t) for name, t in _section_types().items()}
    changes: dict[str, dict[str, Any]] = {name: {} for name in hints if name != "model"}
    model = _ModelChanges()
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override {item!r} must look like section.key=value")
        key, text = item.split("=", 1)
        key, text = key.strip(), text.strip()
        section, _, name = key.partition(".")
        name, _, inner = name.partition(".")
        if section == "model" and name in SECTIONS:
            if not inner:
                low = text.lower()
                _check(low in _TRUE | _FALSE,
                       f"{key} expects on or off (or set one of its keys, e.g. "
                       f"model.{name}.{dataclasses.fields(SECTIONS[name])[0].name}=...); "
                       f"got {text!r}")
                model.toggle(name, low in _TRUE)
                continue
            sec_hints = typing.get_type_hints(SECTIONS[name])
            if inner not in sec_hints:
                raise ConfigError(_unknown_key_message(key))
            model.set(name, inner, _parse_value(key, text, sec_hints[inner]))
        elif section == "model" and name in LEGACY_MODEL_KEYS and not inner:
            model.legacy(name, _parse_value(key, text, LEGACY_MODEL_KEYS[name][2]))
        elif section in hints and name in hints[section] and not inner:
            value = _parse_value(key, text, hints[section][name])
            if section == "model":
                model.fields[name] = value
            else:
                changes[section][name] = value
        else:
            raise ConfigError(_unknown_key_message(key))
    new_model = model.apply(cfg.model)
    for sec, name, value in model.unused:
        # A label count that would do nothing is a mistake, not an old config.json.
        _check(sec is not None or name != "label_dim" or not value,
               f"model.label_dim={value} sets the label_dim of model.conditional or "
               f"model.semi_supervised, and neither is on: set model.conditional.label_dim="
               f"{value} or model.semi_supervised.label_dim={value}, which switches it on")
    # Building the new sections re-runs __post_init__: each value is validated at once.
    return dataclasses.replace(cfg, model=new_model,
                               **{s: dataclasses.replace(getattr(cfg, s), **c)
                                  for s, c in changes.items() if c})


# --------------------------------------------------------------------------- presets

@register("toy")
def _toy() -> Config:
    """Section 4.5: the 25-Gaussian grid with the original code's toy networks, our settings.

    Tuned for the most mode coverage in a small compute budget (README, "2-D experiment"):
    batch 32 and 4,500 steps instead of batch 100 for 200 epochs; Adam beta1 0.5; the
    discriminator's learning rate 8x the generator's (2e-4 and 1.6e-3); linear decay to zero;
    beyond the paper, ALICE's cycle term ||x - G(z_hat)||^2 at weight ``TOY_RECON`` (Li et al.,
    2017) and the R1 penalty at gamma ``TOY_R1`` (Mescheder et al., 2018), applied lazily on
    one step in ``TOY_R1_EVERY`` (Karras et al., 2020); and the decoder's batch-norm statistics
    frozen from ``TOY_FREEZE_BN`` of training on.
    ``--set model.cycle=off --set model.r1=off`` gives the paper's pure ALI; the cycle term must
    go to switch model.kind (and R1 too for the VAE).
    """
    return Config(
        name="toy",
        model=ModelConfig(kind="ali", nets="toy", latent_dim=2, encoder="noise", noise_dim=2,
                          cycle=CycleConfig(TOY_RECON), r1=R1Config(TOY_R1, TOY_R1_EVERY),
                          freeze_decoder_bn_at=TOY_FREEZE_BN),
        data=DataConfig(name="grid"),
        train=TrainConfig(steps=4_500, batch_size=32, lr=2e-4, lr_d=1.6e-3, beta1=0.5,
                          beta2=0.999, lr_schedule="linear"),
    )


@register("toy_ring")
def _toy_ring() -> Config:
    """The 8-Gaussian ring with the ``toy`` preset's settings, but ALICE's cycle term at weight
    ``TOY_RING_RECON``: the settings ``ali toy --dataset ring`` trains ALI with."""
    cfg = _toy()
    return dataclasses.replace(
        cfg, name="toy_ring", data=dataclasses.replace(cfg.data, name="ring"),
        model=dataclasses.replace(cfg.model, cycle=CycleConfig(TOY_RING_RECON)))


@register("toy_paper")
def _toy_paper() -> Config:
    """Section 4.5 exactly as the original code trained one run: batch 100, Adam lr 1e-4,
    PyTorch beta1 0.2 (Blocks' "0.8"), constant learning rate, 200 epochs of 100,000 points."""
    return Config(
        name="toy_paper",
        model=ModelConfig(kind="ali", nets="toy", latent_dim=2, encoder="noise", noise_dim=2),
        data=DataConfig(name="grid"),
        train=TrainConfig(steps=200_000, batch_size=100, lr=1e-4, beta1=0.2, beta2=0.999,
                          lr_schedule="constant", log_every=1000, checkpoint_every=10_000),
    )


# The paper's image models (Tables 3-6) with the original code's networks (``ali arch NAME``
# prints them): Gaussian encoder, init N(0, 0.01), Adam lr 1e-4 and PyTorch betas (0.5, 0.999)
# (Blocks' "beta2 = 1e-3"), constant learning rate, simultaneous 1:1 updates. train.steps is the
# paper's epochs converted at the training split's size.

def _image(name: str, latent_dim: int, batch_size: int, steps: int,
           data: DataConfig | None = None, **train: Any) -> Config:
    return Config(
        name=name,
        model=ModelConfig(kind="ali", nets=name, latent_dim=latent_dim, encoder="gaussian",
                          init_std=0.01),
        data=data or DataConfig(name=name),
        train=TrainConfig(steps=steps, batch_size=batch_size, lr=1e-4, beta1=0.5, beta2=0.999,
                          lr_schedule="constant", **{"log_every": 1000,
                                                     "checkpoint_every": 10_000, **train}),
    )


@register("cifar10")
def _cifar10() -> Config:
    """Table 3: latent 64, batch 100, 6,475 epochs of train[0:45000] (450 steps each)."""
    return _image("cifar10", 64, 100, 6_475 * 450)


@register("svhn")
def _svhn() -> Config:
    """Table 4: latent 256, batch 100, 100 epochs of the extra split (531,131 images)."""
    return _image("svhn", 256, 100, 531_131, DataConfig(name="svhn", train_split="extra"))


@register("celeba")
def _celeba() -> Config:
    """Table 5: latent 256, batch 100, 123 epochs (of the 162,770-image standard train split,
    our assumption: the notes do not say which split the original code used)."""
    return _image("celeba", 256, 100, 123 * 162_770 // 100)


@register("imagenet64")
def _imagenet64() -> Config:
    """Table 6: ILSVRC2012 at 64x64, latent 256, batch 128, 125 epochs of 1,281,167 images."""
    return _image("imagenet64", 256, 128, 125 * 1_281_167 // 128)


@register("mnist")
def _mnist() -> Config:
    """Our own small convolutional ALI for 28x28 MNIST (latent 32), sized for 2 CPU cores:
    6,000 steps of batch 100 (about 14 minutes), with ALICE's cycle term at weight 0.01, which
    keeps held-out reconstructions in their class (92%, against 72% for pure ALI) while the
    encoder's features still beat raw pixels (README). ``--set model.cycle=off`` is ALI."""
    cfg = _image("mnist", 32, 100, MNIST_STEPS, log_every=MNIST_LOG_EVERY, checkpoint_every=2_000)
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model,
                                                               cycle=CycleConfig(MNIST_RECON)))


@register("folder")
def _folder() -> Config:
    """Any folder of images (``--set data.root=DIR``): the network family (mnist, cifar10 or
    celeba) nearest to the images' channels and size, chosen when training starts (the images
    resized to it), and the mnist preset's training (ALI with a light cycle term, 6,000 steps of
    batch 100). Without test/ or valid/ subfolders, a class-stratified 5% is held out
    (data.holdout)."""
    return Config(
        name="folder",
        model=ModelConfig(kind="ali", nets=AUTO_NETS, latent_dim=0, encoder="gaussian",
                          init_std=0.01, cycle=CycleConfig(MNIST_RECON)),
        data=DataConfig(name="folder"),
        train=TrainConfig(steps=MNIST_STEPS, batch_size=100, lr=1e-4, beta1=0.5, beta2=0.999,
                          lr_schedule="constant", log_every=FOLDER_LOG_EVERY,
                          checkpoint_every=2_000),
    )


@register("tiny")
def _tiny() -> Config:
    """A minuscule image model (8x8x3, latent 4) for tests and smoke runs, on any 8x8 RGB
    dataset (an npz file by default: --set data.root=FILE.npz)."""
    return _image("tiny", 4, 16, 20, DataConfig(name="npz"), log_every=5, checkpoint_every=10)


@register("table")
def _table() -> Config:
    """ALI on feature vectors (beyond the paper): a CSV or npz table (``--set data.root=FILE``;
    ``data.label_column`` names a CSV's labels), the ``mlp`` networks, the width filled in
    from the data and every feature standardised with the training split's statistics.
    A single file is the split ``all``: ``data.holdout`` of it (stratified by class where it
    has labels) is held out, or cut it with ``data.train_range`` / ``data.test_range`` (in the
    shuffled order of ``data.split_seed``); an npz of x_train/x_test or a folder of
    train.csv/test.csv has its own splits."""
    return Config(
        name="table",
        model=ModelConfig(kind="ali", nets="mlp", latent_dim=TABLE_LATENT, encoder="gaussian",
                          width=TABLE_WIDTH, disc_width=TABLE_WIDTH, disc_layers=2,
                          maxout_pieces=2),
        data=DataConfig(name="table"),
        train=TrainConfig(steps=TABLE_STEPS, batch_size=64, lr=2e-4, beta1=0.5, beta2=0.999,
                          lr_schedule="constant", log_every=250, checkpoint_every=1_000),
    )


# ---------------------------------------------------------------------------- labels (4.3-4.4)
# Semi-supervised ALI (a K+1 discriminator, section 4.3) and conditional ALI (Eq. 7, section 4.4)
# on the paper's networks. The paper gives no schedule for them; these keep each preset's own.

SSL_LABELS = {"svhn": (1000,), "cifar10": (1000, 2000, 4000, 8000), "mnist": (100,)}
# Chosen on the validation split test[8000:9000] (benchmarks/mnist_select.py; docs, images.md):
# the lowest K+1 error of lr 1e-4 / 3e-4 / 1e-3 at 500-3,000 steps.
MNIST_SSL_STEPS = 2_500
MNIST_SSL_LR = 1e-3
MNIST_CONDITIONAL_STEPS = 4_000
MNIST_CONDITIONAL_RECON = 0.03

# Each labelled preset is its base preset plus overrides: data, not code.
SSL_OVERRIDES = ("model.cycle=off", "model.semi_supervised=on")
SSL_BASE_OVERRIDES = {
    # Table 1 used the 73,257-image train split, not extra.
    "svhn": ("data.train_split=train",),
    "mnist": (f"train.lr={MNIST_SSL_LR}", f"train.steps={MNIST_SSL_STEPS}", "train.log_every=250",
              "train.checkpoint_every=1000"),
}
CONDITIONAL_BASE_OVERRIDES = {
    # The original CelebA code embedded the 40 attributes in 256 dimensions.
    "celeba": ("model.conditional.embed_dim=256",),
    # Pure Eq. 7 had collapsed each class to one image after 2,000 steps (README); ALICE's
    # cycle term makes the decoder use z: 95.8% accuracy at 3,000 steps, 97.8% at 4,000.
    "mnist": ("model.conditional.embed_dim=64", f"model.cycle.weight={MNIST_CONDITIONAL_RECON}",
              f"train.steps={MNIST_CONDITIONAL_STEPS}", "train.log_every=250",
              "train.checkpoint_every=1000"),
    "cifar10": ("model.conditional.embed_dim=64",),
    "svhn": ("model.conditional.embed_dim=64",),
}


def derive(name: str, base: str, overrides: Iterable[str], doc: str) -> None:
    """Register preset ``name`` as preset ``base`` with ``overrides`` applied."""
    overrides = tuple(overrides)

    def make() -> Config:
        return dataclasses.replace(get_config(base, overrides), name=name)
    make.__doc__ = doc
    register(name)(make)


for _base, _counts in SSL_LABELS.items():
    for _n in _counts:
        derive(f"{_base}_ssl_{_n}", _base,
               (*SSL_OVERRIDES, f"data.labels={_n}", *SSL_BASE_OVERRIDES.get(_base, ())),
               f"Semi-supervised ALI on {_base} with {_n} labels (K+1 discriminator, "
               "Tables 1-2).")
for _base, _over in CONDITIONAL_BASE_OVERRIDES.items():
    derive(f"{_base}_conditional", _base, ("model.conditional=on", *_over),
           f"Conditional ALI on {_base} (Eq. 7): "
           + ("its 40 attributes (Figure 7)." if _base == "celeba" else "its classes."))
