import json

import pytest

from ali.config import Config, all_keys, apply_overrides, config_names, get_config
from ali.errors import ConfigError


def test_registry_has_toy_presets():
    assert {"toy", "toy_paper"} <= set(config_names())
    assert get_config("toy").name == "toy"


def test_required_train_keys_exist():
    assert {"train.steps", "train.batch_size", "train.seed", "train.lr"} <= set(all_keys())


def test_overrides_are_typed():
    cfg = get_config("toy", ["train.lr=3e-4", "train.steps=1e3", "model.recon_weight=0",
                             "model.kind=gan", "data.name=ring", "train.progress=off"])
    assert cfg.train.lr == pytest.approx(3e-4)
    assert cfg.train.steps == 1000 and isinstance(cfg.train.steps, int)
    assert cfg.model.kind == "gan" and cfg.data.name == "ring"


def test_unknown_config_name_suggests_closest():
    with pytest.raises(ConfigError, match="did you mean 'toy'"):
        get_config("tyo")


@pytest.mark.parametrize("key, suggestion", [("train.step", "train.steps"),
                                             ("train.batchsize", "train.batch_size"),
                                             ("modle.kind", "model.kind")])
def test_unknown_key_names_closest_valid_key(key, suggestion):
    with pytest.raises(ConfigError, match=f"unknown config key '{key}'; did you mean '{suggestion}'"):
        get_config("toy", [f"{key}=1"])


@pytest.mark.parametrize("item, message", [
    ("train.steps=ten", "train.steps expects an integer"),
    ("train.steps=1.5", "train.steps expects an integer"),
    ("train.lr=fast", "train.lr expects a number"),
    ("train.lr=nan", "finite"),
    ("train.steps=-5", "train.steps must be >= 1"),
    ("train.batch_size=0", "train.batch_size must be >= 1"),
    ("train.beta1=1.0", "train.beta1 must be in"),
    ("model.kind=wgan", "model.kind must be one of"),
    ("train.lr_schedule=cosine", "train.lr_schedule must be one of"),
    ("train.steps", "must look like section.key=value"),
])
def test_bad_values_fail_with_one_clear_line(item, message):
    with pytest.raises(ConfigError, match=message) as e:
        get_config("toy", [item])
    assert "\n" not in str(e.value)


def test_cross_field_checks_see_all_overrides():
    # Order must not matter: the VAE needs a Gaussian encoder, set by the second override.
    pure = ["model.recon_weight=0", "model.r1_weight=0"]
    cfg = get_config("toy", ["model.kind=vae", "model.encoder=gaussian", *pure])
    assert cfg.model.kind == "vae"
    with pytest.raises(ConfigError, match="needs model.encoder=gaussian"):
        get_config("toy", ["model.kind=vae", *pure])


def test_configs_are_frozen():
    cfg = get_config("toy")
    with pytest.raises(AttributeError):
        cfg.train.lr = 1.0  # type: ignore[misc]


def test_json_round_trip():
    cfg = get_config("toy", ["train.lr=2e-3", "model.runs=3"])
    again = Config.from_dict(json.loads(cfg.to_json()))
    assert again == cfg
    with pytest.raises(ConfigError, match="did you mean 'train.steps'"):
        Config.from_dict({"train": {"stepz": 3}})


def test_apply_overrides_leaves_original_untouched():
    cfg = get_config("toy")
    new = apply_overrides(cfg, ["train.seed=7"])
    assert cfg.train.seed == 0 and new.train.seed == 7


def _cycle(c):
    return c.model.cycle.weight if c.model.cycle else 0


def _r1(c):
    return c.model.r1.weight if c.model.r1 else 0


def test_toy_default_carries_the_cycle_term_and_the_toy_experiment_removes_it_elsewhere():
    from ali.config import TOY_FREEZE_BN, TOY_R1, TOY_RECON
    from ali.experiments.toy import MODELS, model_overrides, tuned_overrides
    toy = get_config("toy")
    assert _cycle(toy) == TOY_RECON > 0 and _r1(toy) == TOY_R1 > 0
    paper = get_config("toy_paper")                             # the paper's protocol: pure ALI
    assert paper.model.cycle is None and paper.model.r1 is None
    with pytest.raises(ConfigError, match="model.cycle does not apply to model.kind=gan .*add --set model.cycle=off"):
        get_config("toy", ["model.kind=gan"])
    with pytest.raises(ConfigError, match="model.r1 does not apply to model.kind=vae .*add --set model.r1=off"):
        get_config("toy", ["model.kind=vae", "model.encoder=gaussian", "model.recon_weight=0"])
    cfgs = {k: get_config("toy", tuned_overrides(k)) for k in MODELS}
    assert {k: _cycle(c) for k, c in cfgs.items()} == {
        "ali": TOY_RECON, "gan": 0, "gan_inverse": 0, "gan_posthoc": 0, "vae": 0}
    assert {k: _r1(c) for k, c in cfgs.items()} == {
        "ali": TOY_R1, "gan": TOY_R1, "gan_inverse": TOY_R1, "gan_posthoc": TOY_R1, "vae": 0}
    # Every model trains the preset's own settings.
    assert all(c.train == toy.train for c in cfgs.values())
    assert all(c.model.r1.every == toy.model.r1.every for c in cfgs.values() if c.model.r1)
    assert toy.model.freeze_decoder_bn_at == TOY_FREEZE_BN < 1
    assert all(c.model.freeze_decoder_bn_at == TOY_FREEZE_BN for c in cfgs.values())
    assert get_config("toy_paper").model.freeze_decoder_bn_at == 1      # the paper: never
    # A user's own settings survive the per-model ones: ALI's cycle weight, and an R1 penalty
    # or learning rate asked of every model (bar R1 for the VAE, which has no discriminator).
    cfg = get_config("toy", ["model.recon_weight=0", *model_overrides("ali")])
    assert cfg.model.cycle is None
    user = ("model.r1_weight=2", "train.lr_d=1e-3")
    assert get_config("toy", tuned_overrides("gan", user)).model.r1.weight == 2
    assert get_config("toy", tuned_overrides("gan", user)).train.lr_d == 1e-3
    assert get_config("toy", tuned_overrides("vae", user)).model.r1 is None


def test_mnist_default_carries_the_cycle_term_and_its_label_presets_choose_their_own():
    assert get_config("mnist").model.cycle.weight == 0.01
    assert get_config("mnist", ["model.recon_weight=0"]).model.cycle is None   # the old key
    assert get_config("mnist", ["model.cycle=off"]).model.cycle is None
    # The K+1 model has no cycle term (its losses ignore it, so the config refuses it).
    assert get_config("mnist_ssl_100").model.cycle is None
    with pytest.raises(ConfigError, match="model.semi_supervised cannot be combined with "
                                          "model.cycle; add --set model.cycle=off"):
        get_config("mnist_ssl_100", ["model.recon_weight=0.01"])
    assert get_config("mnist_conditional").model.cycle.weight == 0.03


def test_legacy_label_dim_without_a_labelled_section_is_refused_naming_the_real_keys():
    # it did nothing: neither model.conditional nor model.semi_supervised was on
    with pytest.raises(ConfigError) as e:
        get_config("tiny", ["model.label_dim=5"])
    assert "model.conditional.label_dim=5 or model.semi_supervised.label_dim=5" in str(e.value)
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="neither is on"):
        get_config("mnist_conditional", ["model.conditional=off", "model.label_dim=5"])
    # where a labelled section is on (in either order) it sets its label_dim, as before
    for over in (["model.label_dim=5", "model.conditional=true"],
                 ["model.semi_supervised=true", "model.label_dim=5"]):
        assert get_config("tiny", over).model.label_dim == 5
    assert get_config("tiny", ["model.label_dim=0"]).model.label_dim == 0   # nothing to set
    # a run's config.json of the flat era loads as it did, label_dim and all
    assert Config.from_dict({"model": {"label_dim": 10, "conditional": False}}).model.label_dim == 0
