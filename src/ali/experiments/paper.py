"""The paper's experiments as data: which runs each trains, what it measures, the paper's numbers.

An :class:`Experiment` is a list of :class:`Stage` (one training run of a registered preset,
repeated once per seed) and of :class:`Measure` (one row of its table: an ``ali eval`` metric
on a stage's runs, with the paper's number beside it), plus the figures it draws.
:mod:`ali.experiments.runner` runs one; ``ali experiment NAME`` is the command. Each scale has
its own settings: ``full`` is the preset as registered (the paper's schedule), ``smoke`` the same
pipeline at tiny sizes on small synthetic data (:mod:`ali.data.synthetic`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

SCALES = ("smoke", "full")

SMOKE_TRAIN = ("train.steps=4", "train.batch_size=16", "train.log_every=2",
               "train.checkpoint_every=4", "model.channel_scale=0.125")
"""Every stage at smoke scale: a few steps of small batches on the paper's networks with an
eighth of their feature maps."""
SMOKE_SIZES = {"mnist": (600, 600), "svhn": (600, 200), "cifar10": (600, 200),
               "celeba": (100, 50), "imagenet64": (100, 50)}
"""(training, held-out) images of each synthetic dataset written at smoke scale. MNIST's are
all in its test file, which the experiment splits three ways as it splits the real one."""

SVM_SMOKE = {"labels": 50, "repeats": 2, "c_grid": "-20:20:5", "protocol": "balanced"}
"""The SVM protocol at smoke scale (synthetic SVHN has no 73,257-image train split)."""
FID_SMOKE = {"n": 100, "feature_net": "classifier"}
"""FID and KID at smoke scale: in the pixel classifier's feature space (no InceptionV3 weights
to download), on 100 images."""
RECON_SMOKE = {"n": 100, "no_classifier": True}


@dataclass(frozen=True)
class Stage:
    """One training run: preset ``preset`` with ``overrides`` (and ``smoke`` added at smoke
    scale), in ``DIR/runs/NAME-seedS`` for each seed S."""

    name: str
    preset: str
    overrides: tuple[str, ...] = ()
    smoke: tuple[str, ...] = ()


@dataclass(frozen=True)
class Measure:
    """One row of the table: ``ali eval`` metric ``metric`` with ``options`` (``smoke`` merged
    in at smoke scale) on the runs of stage ``stage``; ``key`` is the number reported.

    ``ours`` is the mean of ``key`` over seeds; ``ours_std`` their std times ``std_times`` (the
    paper's error-bar convention), or, with one seed, the result's own ``std_key`` (the SVM's
    spread over its 100 SVMs, KID's over its subsets) where there is one."""

    setting: str
    metric: str
    key: str
    stage: str
    paper: float | None = None
    paper_std: float | None = None
    options: dict = field(default_factory=dict)
    smoke: dict = field(default_factory=dict)
    std_key: str | None = None
    std_times: int = 1


@dataclass(frozen=True)
class Experiment:
    """One of the paper's experiments (see the module docstring)."""

    name: str
    title: str
    dataset: str
    """``data.name`` of its data: what ``--data-root`` holds, and what smoke scale writes."""
    stages: tuple[Stage, ...]
    measures: tuple[Measure, ...]
    figures: tuple[tuple[str, str], ...] = ()
    """(stage, kind) pairs: ``samples``, ``reconstructions``, ``interpolations`` or
    ``classes`` (a conditional model's samples, one class per row)."""
    baselines: tuple[str, ...] = ()
    """The other models of the paper's table, as the paper gives them."""
    notes: tuple[str, ...] = ()
    data: dict = field(default_factory=dict)
    """Overrides of every stage at each scale (``{"full": (...), "smoke": (...)}``)."""
    protocol: str = ""
    """An experiment that is not stages and metrics names its own protocol here (run by
    :data:`ali.experiments.runner.PROTOCOLS`)."""


EXPERIMENTS: dict[str, Experiment] = {}
def register(e: Experiment) -> Experiment:
    EXPERIMENTS[e.name] = e
    return e


def _svm(stage: str, paper: float | None, paper_std: float | None, **options) -> Measure:
    return Measure("L2-SVM on encoder features, 1,000 labels, 100 SVMs", "svm", "error_mean",
                   stage, paper, paper_std, options=options, smoke=SVM_SMOKE,
                   std_key="error_std")


def _image_rows(stage: str) -> tuple[Measure, ...]:
    """FID, KID and reconstruction error of a run (none in the paper: it shows figures); the
    table names the feature network each FID and KID was measured in (InceptionV3, or the pixel
    classifier at smoke scale)."""
    return (Measure("FID of samples", "fid", "fid", stage, smoke=FID_SMOKE),
            Measure("KID of samples", "kid", "kid_mean", stage,
                    smoke={**FID_SMOKE, "subsets": 10, "subset_size": 50}, std_key="kid_std"),
            Measure("reconstruction MSE per pixel, held-out images", "recon", "mse", stage,
                    smoke=RECON_SMOKE))


register(Experiment(
    "table1", "Table 1: SVHN test error, 1,000 labels", "svhn",
    stages=(Stage("svhn", "svhn"),
            Stage("svhn_ssl_1000", "svhn_ssl_1000", smoke=("data.labels=50",))),
    measures=(_svm("svhn", 19.14, 0.50),
              Measure("K+1 ALI, 1,000 labels (no feature matching)", "classify", "error",
                      "svhn_ssl_1000", 7.42, 0.65)),
    baselines=("VAE (M1 + M2): 36.02", "SWWAE with dropout: 23.56", "DCGAN + L2-SVM: 22.18",
               "SDGM: 16.61", "GAN (feature matching): 8.11 ± 1.3"),
    notes=("L2-SVM: the authors' protocol (semi_supervised_svhn.py); at smoke scale the "
           "balanced protocol, as synthetic SVHN has no 73,257-image train split",)))

TABLE2_LABELS = {1000: (19.98, 0.89), 2000: (19.09, 0.44), 4000: (17.99, 1.62),
                 8000: (17.05, 1.49)}
register(Experiment(
    "table2", "Table 2: CIFAR-10 test error of K+1 ALI (error bars: 3 std over seeds)",
    "cifar10",
    stages=tuple(Stage(f"cifar10_ssl_{n}", f"cifar10_ssl_{n}", smoke=(f"data.labels={n // 20}",))
                 for n in TABLE2_LABELS),
    measures=tuple(Measure(f"K+1 ALI, {n:,} labels", "classify", "error", f"cifar10_ssl_{n}",
                           p, s, std_times=3) for n, (p, s) in TABLE2_LABELS.items()),
    baselines=("Ladder network: 20.40 (4,000 labels)", "CatGAN: 19.58 (4,000 labels)",
               "GAN (feature matching): 21.83 ± 2.01 / 19.61 ± 2.09 / 18.63 ± 2.32 / "
               "17.72 ± 1.82"),
    notes=("smoke scale keeps 1/20 of each label count",)))

register(Experiment(
    "figure2", "Figure 2: SVHN samples and reconstructions", "svhn",
    stages=(Stage("svhn", "svhn"),), measures=_image_rows("svhn"),
    figures=(("svhn", "samples"), ("svhn", "reconstructions"))))

register(Experiment(
    "figure4", "Figure 4: CIFAR-10 samples and reconstructions", "cifar10",
    stages=(Stage("cifar10", "cifar10"),), measures=_image_rows("cifar10"),
    figures=(("cifar10", "samples"), ("cifar10", "reconstructions"))))

# MNIST (not in the paper): train on test[0:8000], choose settings on test[8000:9000], report
# on test[9000:10000], the only split a figure here comes from.
MNIST_SPLIT = {"full": ("data.train_split=test", "data.train_range=0:8000",
                        "data.test_split=test", "data.test_range=9000:"),
               "smoke": ("data.train_split=test", "data.train_range=0:480",
                         "data.test_split=test", "data.test_range=540:")}
"""The MNIST experiment's split at each scale (the same proportions, 80% / 10% / 10%)."""
register(Experiment(
    "mnist", "MNIST (not in the paper): our CPU-scale demonstration on the real digits", "mnist",
    stages=(Stage("mnist", "mnist"), Stage("mnist_ssl_100", "mnist_ssl_100",
                                           smoke=("data.labels=20",)),
            Stage("mnist_conditional", "mnist_conditional")),
    measures=(Measure("L2-SVM on encoder features, 1,000 labels, 100 SVMs", "svm", "error_mean",
                      "mnist", smoke=SVM_SMOKE, std_key="error_std"),
              Measure("reconstructions keeping their class (pixel classifier)", "recon",
                      "class_agreement", "mnist", smoke={"n": 60}),
              Measure("K+1 ALI, 100 labels", "classify", "error", "mnist_ssl_100"),
              Measure("conditional samples of the asked class (pixel classifier)",
                      "conditional", "accuracy", "mnist_conditional",
                      smoke={"samples": 50})),
    figures=(("mnist", "samples"), ("mnist", "reconstructions"), ("mnist", "interpolations"),
             ("mnist_conditional", "classes")),
    baselines=("Improved GAN (Salimans et al., 2016), 100 labels: 0.93 ± 0.065% (60k "
               "training digits)",),
    notes=("full scale: trained on test[0:8000], reported on test[9000:10000]; "
           "the three presets' settings were chosen on the validation split test[8000:9000] "
           "(benchmarks/mnist_select.py) (smoke scale: the same three-way cut of 600 "
           "synthetic digits)",),
    data=MNIST_SPLIT))

register(Experiment(
    "figure8", "Figure 8: the 2-D mixtures, the paper's protocol (best-covering runs)", "grid",
    stages=(), measures=(), protocol="figure8",
    baselines=("the paper (grid, its mode count): ALI 13.4 ± 5.8 modes, GAN 10.4 ± 9.2",
               "PacGAN (Lin et al., 2018) for ALI: 24.1 ± 0.4 modes / 95.7% high quality on the "
               "grid, 6.6 ± 0.3 / 97.6% on the ring",
               "VEEGAN (Srivastava et al., 2017) for ALI: 15.8 / 1.6% (grid), 2.8 / 0.13% (ring)"),
    notes=("each run draws its learning rate, beta1 and init std (ali.experiments.toy."
           "paper_draw); GAN + inverse mapping and GAN + post-hoc inference learn inference for "
           "each fully trained GAN run, its decoder frozen; the figures show each model's "
           "best-covering run",)))

# CelebA and downsampled ImageNet: the paper shows figures of validation images.
VALID = {"full": ("data.test_split=valid",), "smoke": ("data.test_split=valid",)}
register(Experiment(
    "figure3", "Figure 3: CelebA samples and reconstructions", "celeba",
    stages=(Stage("celeba", "celeba"),), measures=_image_rows("celeba"),
    figures=(("celeba", "samples"), ("celeba", "reconstructions")), data=VALID,
    notes=("reconstructions and metrics on CelebA's validation split (list_eval_partition 1)",)))

register(Experiment(
    "figure5", "Figure 5: downsampled ImageNet (64 x 64) samples and reconstructions",
    "imagenet64",
    stages=(Stage("imagenet64", "imagenet64"),), measures=_image_rows("imagenet64"),
    figures=(("imagenet64", "samples"), ("imagenet64", "reconstructions")),
    notes=("the paper's 'Tiny ImageNet' is the 64 x 64 downsampled ImageNet of its "
           "section 4 (Table 6); reconstructions of its validation images",)))

register(Experiment(
    "figure6", "Figure 6: latent interpolations between CelebA validation pairs", "celeba",
    stages=(Stage("celeba", "celeba"),),
    measures=(Measure("reconstruction MSE per pixel, validation images", "recon", "mse",
                      "celeba", smoke=RECON_SMOKE),),
    figures=(("celeba", "interpolations"),), data=VALID,
    notes=("each row: x_1, the decoding of 8 codes interpolated linearly from z_1 = E(x_1) "
           "(a draw from the encoder) to z_2 = E(x_2), and x_2",)))

register(Experiment(
    "figure7", "Figure 7: conditional CelebA, one fixed z, the paper's attribute sequence",
    "celeba",
    stages=(Stage("celeba_conditional", "celeba_conditional"),),
    measures=(Measure("attributes of conditional samples found by the pixel classifier",
                      "conditional", "accuracy", "celeba_conditional", smoke={"samples": 50}),),
    figures=(("celeba_conditional", "attributes"),), data=VALID,
    notes=("rows I-IV: male, attractive, young / male, attractive, older / female, "
           "attractive, young / female, attractive, older; column (a) the row alone, (b)-(l) "
           "the caption's sequence (black hair; brown hair; blond hair; black, wavy hair; "
           "blond hair, bangs; blond hair, receding hairline; blond hair, balding; black "
           "hair, smiling; ... mouth slightly open; ... eyeglasses; ... wearing hat)",)))
