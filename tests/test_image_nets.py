"""The image network families (Tables 3-6, MNIST, tiny): shapes, layer order, init, presets,
and ``ali arch``. Models are built once per family and only run forward on a batch of 2."""

import functools
import json

import numpy as np
import pytest
import torch
from torch import nn

from ali.cli import main
from ali.config import get_config
from ali.errors import ConfigError
from ali.model import ALI
from ali.build import build_model
from ali.nets import family, init_decoder_bias_
from ali.nets.conv import ConvBlock, PixelBias

FAMILIES = {  # name: (latent, image shape, batch size)
    "tiny": (4, (3, 8, 8), 16),
    "mnist": (32, (1, 28, 28), 100),
    "cifar10": (64, (3, 32, 32), 100),
    "svhn": (256, (3, 32, 32), 100),
    "celeba": (256, (3, 64, 64), 100),
    "imagenet64": (256, (3, 64, 64), 128),
}


@functools.lru_cache(maxsize=None)
def model(name: str) -> ALI:
    torch.manual_seed(0)
    return build_model(get_config(name)).eval()


def blocks(net: nn.Module) -> list[ConvBlock]:
    return [m for m in net.modules() if isinstance(m, ConvBlock)]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_preset(name):
    cfg = get_config(name)
    latent, _, batch = FAMILIES[name]
    m, t = cfg.model, cfg.train
    assert (m.kind, m.nets, m.encoder, m.latent_dim, m.init_std) == (
        "ali", name, "gaussian", latent, 0.01)
    assert (t.lr, t.beta1, t.beta2, t.batch_size, t.lr_schedule) == (
        1e-4, 0.5, 0.999, batch, "constant")
    assert cfg.data.name == ("npz" if name == "tiny" else name)
    if name == "svhn":  # the paper trained on the extra split
        assert cfg.data.train_split == "extra"


@pytest.mark.parametrize("name", list(FAMILIES))
def test_forward_shapes(name):
    latent, shape, _ = FAMILIES[name]
    m = model(name)
    B = 2
    x, z = torch.rand(B, *shape), m.sample_prior(B)
    with torch.no_grad():
        assert z.shape == (B, latent, 1, 1)
        assert m.encoder.net(x).shape == (B, 2 * latent, 1, 1)
        assert m.encode(x).shape == (B, latent, 1, 1)
        x_tilde = m.decode(z)
        assert x_tilde.shape == (B, *shape)
        assert ((x_tilde > 0) & (x_tilde < 1)).all()
        assert m.discriminator(x, z).shape == (B, 1)
    for part in (m.encoder, m.decoder, m.discriminator):
        assert sum(p.numel() for p in part.parameters()) > 0


def test_cifar10_encoder_spatial_sizes():
    m = model("cifar10")
    sizes = []
    hooks = [b.register_forward_hook(lambda mod, a, out: sizes.append(out.shape[-1]))
             for b in m.encoder.net]
    with torch.no_grad():
        m.encoder.net(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert sizes == [28, 13, 10, 4, 1, 1, 1]


def test_cifar10_discriminator_follows_the_code():
    d = model("cifar10").discriminator
    # The original drops the INPUT of x_discriminator.layers[2::3] of [conv, maxout] x 5: the
    # 64 conv (2), the maxout after the 128 conv (5: the 128 conv's output) and the 512 conv (8).
    assert [b.spec.dropout for b in d.d_x] == [0.2, 0.5, 0.0, 0.0, 0.5]
    assert [b.spec.dropout_out for b in d.d_x] == [0.0, 0.0, 0.5, 0.0, 0.0]
    names = [n for n, _ in d.d_x[2].named_children()]
    assert names == ["conv", "dropout_out", "act"]      # dropped after the conv, before maxout
    assert [b.spec.dropout for b in d.d_z] == [0.2, 0.5]
    assert [b.spec.dropout for b in d.d_xz] == [0.5, 0.5, 0.5]
    assert all(b.spec.act == "maxout" for b in [*d.d_x, *d.d_z, *d.d_xz[:-1]])
    assert d.d_xz[0].conv.in_channels == 512          # maxout halves: 256 + 256, not 1024
    assert model("celeba").discriminator.d_xz[0].conv.in_channels == 1536
    assert model("imagenet64").discriminator.d_xz[0].conv.in_channels == 2304
    assert model("svhn").discriminator.d_xz[0].conv.in_channels == 1024


# Which discriminator convs have a bias in the original code: use_bias=False on D(x) (switched
# back on for its first conv) and on D(z) in every family but Tiny ImageNet's; the joint
# convs keep theirs. D(x)'s later convs are followed by batch norm except in CIFAR-10.
ORIGINAL_BIASES = {
    "cifar10": ([True, False, False, False, False], [False, False], [True, True, True]),
    "svhn": ([True, False, False, False, False], [False, False], [True, True, True]),
    "celeba": ([True, False, False, False, False], [False, False], [True, True, True]),
    "imagenet64": ([True] + [False] * 5, [True, True], [True, True, True]),
}


@pytest.mark.parametrize("name", list(ORIGINAL_BIASES))
def test_discriminator_biases_follow_the_code(name):
    d = model(name).discriminator
    got = tuple([b.conv.bias is not None for b in net] for net in (d.d_x, d.d_z, d.d_xz))
    assert got == ORIGINAL_BIASES[name]


@pytest.mark.parametrize("name", list(FAMILIES))
def test_layer_conventions(name):
    m = model(name)
    for b in blocks(m):
        names = [n for n, _ in b.named_children()]
        # dropout acts on the conv's input; bn after the conv; nonlinearity last
        order = [n for n in ("dropout", "conv", "dropout_out", "bn", "bias", "act")
                 if n in names]
        assert names == order
        assert ("dropout" in names) == (b.spec.dropout > 0)
        assert b.conv.padding == (0, 0)
        assert (b.conv.bias is not None) == b.spec.has_bias
        if b.spec.bn or b.spec.pixel_bias:
            assert b.conv.bias is None
        if "bn" in names:
            assert (b.bn.eps, b.bn.momentum) == (1e-4, 0.05)
        assert ("dropout_out" in names) == (b.spec.dropout_out > 0)
    # dropout only in the discriminator
    assert not any(isinstance(x, nn.Dropout) for x in [*m.encoder.modules(),
                                                        *m.decoder.modules()])
    assert any(isinstance(x, nn.Dropout) for x in m.discriminator.modules())
    # the decoder ends in a per-pixel bias and a sigmoid
    last = m.decoder[-1]
    assert isinstance(last.bias, PixelBias) and isinstance(last.act, nn.Sigmoid)
    assert last.bias.bias.shape == FAMILIES[name][1]


def test_init_and_no_dropout_option():
    w = model("cifar10").encoder.net[4].conv.weight       # 512 x 256 x 4 x 4
    assert abs(w.std().item() - 0.01) < 5e-4 and abs(w.mean().item()) < 5e-4
    m = build_model(get_config("tiny", ["model.dropout=false"]))
    assert not any(isinstance(x, nn.Dropout) for x in m.modules())


def test_init_decoder_bias():
    m = build_model(get_config("tiny"))
    x = torch.rand(500, 3, 8, 8)
    x[:, 0, 0, 0] = 0.0                                   # a pixel that is always black
    init_decoder_bias_(m, x)
    mean = x.double().mean(0).clamp(1e-7, 1 - 1e-7)
    bias = m.decoder[-1].bias.bias
    assert torch.allclose(bias.double(), torch.log(mean / (1 - mean)), atol=1e-5)
    assert bias[0, 0, 0].item() == pytest.approx(-16.118, abs=1e-3)   # logit(1e-7)
    with pytest.raises(ValueError):
        init_decoder_bias_(m, torch.rand(10, 1, 8, 8))


def test_image_nets_reject_toy_options():
    with pytest.raises(ConfigError, match="noise"):
        build_model(get_config("tiny", ["model.encoder=noise"]))
    with pytest.raises(ConfigError, match="runs"):
        build_model(get_config("tiny", ["model.runs=2"]))


@pytest.mark.parametrize("kind", ["ali", "gan", "gan_inverse", "gan_posthoc", "vae"])
def test_losses_on_tiny(kind):
    m = build_model(get_config("tiny", [f"model.kind={kind}"])).train()
    m.schedule(1, 1)                                      # gan_posthoc: its ALI phase
    x = torch.rand(4, 3, 8, 8)
    out = m.losses(x, m.sample_prior(4))
    assert torch.isfinite(out.g)
    assert kind == "vae" or torch.isfinite(out.d)
    if kind in ("gan", "gan_inverse"):
        assert m.discriminator(x).shape == (4, 1)


def test_deterministic_encoder_on_images():
    m = build_model(get_config("tiny", ["model.encoder=deterministic"])).eval()
    x = torch.rand(2, 3, 8, 8)
    assert m.encoder.net(x).shape == (2, 4, 1, 1)
    assert torch.equal(m.encode(x), m.encode(x))


def test_arch_json(capsys):
    assert main(["arch", "cifar10", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    assert set(d) == {"name", "kind", "latent_dim", "image_shape", "params", "networks"}
    assert (d["name"], d["kind"], d["latent_dim"], d["image_shape"]) == \
        ("cifar10", "ali", 64, [3, 32, 32])
    nets = d["networks"]
    assert list(nets) == ["encoder", "decoder", "disc_x", "disc_z", "disc_joint"]
    shapes = {k: (v["in_shape"], v["out_shape"]) for k, v in nets.items()}
    assert shapes == {"encoder": ([3, 32, 32], [128, 1, 1]),
                      "decoder": ([64, 1, 1], [3, 32, 32]),
                      "disc_x": ([3, 32, 32], [256, 1, 1]),
                      "disc_z": ([64, 1, 1], [256, 1, 1]),
                      "disc_joint": ([512, 1, 1], [1, 1, 1])}
    m = model("cifar10")
    d_ = m.discriminator
    for key, net in [("encoder", m.encoder), ("decoder", m.decoder), ("disc_x", d_.d_x),
                     ("disc_z", d_.d_z), ("disc_joint", d_.d_xz)]:
        assert set(nets[key]) == {"params", "in_shape", "out_shape", "layers"}
        assert nets[key]["params"] == sum(p.numel() for p in net.parameters())
        for layer in nets[key]["layers"]:
            assert set(layer) == {"op", "kernel", "stride", "out_channels", "bn", "dropout",
                                  "dropout_out", "act"}
    assert nets["encoder"]["layers"][0] == {"op": "conv", "kernel": 5, "stride": 1,
                                            "out_channels": 32, "bn": True, "dropout": 0.0,
                                            "dropout_out": 0.0, "act": "lrelu"}
    assert nets["decoder"]["layers"][0]["op"] == "convT"
    assert nets["decoder"]["layers"][-1]["act"] == "sigmoid"
    assert [l["act"] for l in nets["disc_x"]["layers"]] == ["maxout"] * 5
    assert [l["dropout"] for l in nets["disc_x"]["layers"]] == [0.2, 0.5, 0.0, 0.0, 0.5]
    assert [l["dropout_out"] for l in nets["disc_x"]["layers"]] == [0.0, 0.0, 0.5, 0.0, 0.0]


def test_arch_text(capsys):
    assert main(["arch", "tiny"]) == 0
    text = capsys.readouterr().out
    for title in ("G_z(x), encoder: 3x8x8 -> 8x1x1", "G_x(z), decoder: 4x1x1 -> 3x8x8", "D(x)",
                  "D(z)", "D(x, z): 24x1x1 -> 1x1x1", "transposed conv", "maxout", "parameters"):
        assert title in text
    assert main(["arch", "toy"]) == 0
    assert "linear" in capsys.readouterr().out


KIND_NETWORKS = {
    "ali": ["encoder", "decoder", "disc_x", "disc_z", "disc_joint"],
    "gan": ["decoder", "disc_marginal"],
    "gan_inverse": ["encoder", "decoder", "disc_marginal"],
    "gan_posthoc": ["encoder", "decoder", "disc_marginal", "disc_x", "disc_z", "disc_joint"],
    "vae": ["encoder", "decoder"],
}


@pytest.mark.parametrize("preset, overrides, networks", [
    *[("tiny", [f"model.kind={k}"], nets) for k, nets in KIND_NETWORKS.items()],
    ("tiny", ["model.alad=on"], [*KIND_NETWORKS["ali"], "disc_xx", "disc_zz"]),
    ("tiny", ["model.conditional=on"], KIND_NETWORKS["ali"]),
    ("toy", ["model.cycle=off", "model.r1=off", "model.encoder=gaussian", "model.kind=vae"],
     KIND_NETWORKS["vae"]),
], ids=lambda v: "-".join(v) if isinstance(v, list) else v)
def test_arch_describes_the_model_training_builds(tmp_path, capsys, preset, overrides,
                                                  networks):
    # ali arch follows model.kind: its networks and parameter count are those of the model
    # that ali train builds from the same config.
    from ali.checkpoint import load_run

    x = torch.randint(0, 255, (8, 8, 8, 3), dtype=torch.uint8).numpy()
    y = torch.arange(8).numpy() % 2
    np.savez(tmp_path / "tiny.npz", x_train=x, y_train=y)
    sets = [a for kv in overrides for a in ("--set", kv)]
    data = ["--set", f"data.root={tmp_path / 'tiny.npz'}"] if preset == "tiny" else []
    assert main(["train", preset, *sets, *data, "--set", "train.steps=1", "--set",
                 "train.batch_size=4", "--set", "train.progress=off",
                 "--out", str(tmp_path / "run")]) == 0
    trained, _, _ = load_run(tmp_path / "run")
    capsys.readouterr()
    label_dim = ["--set", "model.label_dim=2"] if "model.conditional=on" in overrides else []
    assert main(["arch", preset, *sets, *label_dim, "--json"]) == 0
    desc = json.loads(capsys.readouterr().out)
    assert list(desc["networks"]) == networks
    assert desc["params"]["generator"] + desc["params"]["discriminator"] == \
        sum(p.numel() for p in trained.parameters())
    assert desc["params"]["discriminator"] == sum(p.numel() for p in trained.parameters_d())
    assert main(["arch", preset, *sets, *label_dim]) == 0
    total = f"total {sum(p.numel() for p in trained.parameters()):,} parameters"
    assert total in capsys.readouterr().out


def test_arch_unknown_name(capsys):
    assert main(["arch", "cifar100"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'cifar10'" in err and err.count("\n") == 1


def test_families_registered():
    for name in FAMILIES:
        assert family(name).data_shape(get_config(name).model) == FAMILIES[name][1]


@pytest.mark.parametrize("name", ["cifar10", "svhn", "mnist"])
def test_channel_scale_makes_tiny_networks_of_the_same_shape(name):
    torch.manual_seed(0)
    full = model(name)
    small = build_model(get_config(name, ["model.channel_scale=0.125"])).eval()
    n_full = sum(p.numel() for p in full.parameters())
    assert sum(p.numel() for p in small.parameters()) < n_full / 20
    x = torch.rand(3, *FAMILIES[name][1])
    with torch.no_grad():
        z = small.encode(x)
        assert z.shape == full.encode(x).shape == (3, FAMILIES[name][0], 1, 1)
        assert small.decode(z).shape == x.shape
        assert small.log_ratio(x, z).shape == (3,)
    big, tiny = blocks(full.discriminator.d_x), blocks(small.discriminator.d_x)
    assert [b.spec.maps // 8 for b in big] == [b.spec.maps for b in tiny]
    assert blocks(small.discriminator.d_xz)[-1].spec.maps == 1        # the logit stays one


def test_channel_scale_is_validated():
    from ali.errors import ConfigError
    with pytest.raises(ConfigError, match="channel_scale must be in"):
        get_config("svhn", ["model.channel_scale=0"])
    with pytest.raises(ConfigError, match="applies to image networks"):
        get_config("toy", ["model.channel_scale=0.5"])


def test_building_a_semi_supervised_model_leaves_the_family_tables_alone():
    # The K+1 discriminator replaces its last row with K logits: on a copy of the table, so
    # that a model built afterwards still has one logit.
    from ali.nets import family
    table = list(family("tiny").FAMILY.disc_joint)
    build_model(get_config("tiny", ["model.semi_supervised=on",
                                    "model.semi_supervised.label_dim=3"]))
    assert family("tiny").FAMILY.disc_joint == table
    d = build_model(get_config("tiny")).discriminator
    assert blocks(d.d_xz)[-1].spec.maps == 1


def _shuffle_norms_(module: nn.Module) -> None:
    """Batch-norm statistics and affine parameters away from (0, 1), so folding them shows."""
    g = torch.Generator().manual_seed(1)
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            with torch.no_grad():
                m.running_mean.copy_(torch.rand(m.running_mean.shape, generator=g) - 0.5)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=g) + 0.5)
                m.weight.copy_(torch.rand(m.weight.shape, generator=g) + 0.5)
                m.bias.copy_(torch.rand(m.bias.shape, generator=g) - 0.5)


@pytest.mark.parametrize("name", [*FAMILIES, "toy", "table"])
def test_inference_copy_is_the_same_function_without_its_batch_norms(name):
    """ali.nets.parts.inference_copy (anomaly scoring): batch norm folded into the layer before
    it, activations in place, channels-last; the outputs of the evaluation-mode model up to
    float rounding, the model and the input untouched."""
    from ali.nets.parts import inference_copy

    torch.manual_seed(0)
    overrides = ["model.data_dim=5"] if name == "table" else []
    m = build_model(get_config(name, overrides))
    _shuffle_norms_(m)
    before = {k: v.clone() for k, v in m.state_dict().items()}
    fast = inference_copy(m)
    assert m.training and all(torch.equal(v, before[k]) for k, v in m.state_dict().items())
    kept = [mod for mod in fast.modules() if type(mod) in (nn.BatchNorm1d, nn.BatchNorm2d)]
    folded = sum(type(mod) in (nn.BatchNorm1d, nn.BatchNorm2d) for mod in m.modules())
    if name in FAMILIES:
        assert folded > 0 and kept == []          # every conv's batch norm is folded
    x = (torch.rand(3, *m.data_shape) if name in FAMILIES else torch.randn(3, *m.data_shape))
    x0 = x.clone()
    m.eval()
    with torch.no_grad():
        z = m.encode_mean(x)
        torch.testing.assert_close(fast.encode_mean(x), z, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast.decode(z), m.decode(z), rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(fast.discriminator(x, z), m.discriminator(x, z),
                                   rtol=1e-4, atol=1e-4)
    assert torch.equal(x, x0)                     # in-place activations never touch the input
