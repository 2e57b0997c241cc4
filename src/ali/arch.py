"""Describe the networks of the model a config builds as tables like the paper's
(``ali arch NAME``).

The model is built by :func:`ali.build.build_model`, as training builds it, so the tables
follow ``model.kind``: a GAN has no encoder and a D(x) of its own, a VAE no discriminator,
ALAD two more discriminators. Every shape here comes from an actual forward pass (forward
hooks on a batch of 2 in evaluation mode), never from the tables themselves: a table and the
network it builds cannot drift apart unnoticed.

A network is described layer by layer. A layer starts at each conv, transposed conv or linear
module; a dropout just before it is its input dropout, and an output dropout
(:class:`~ali.nets.layers.OutputDropout`), the batch norm and the nonlinearity after it belong
to it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .build import build_model
from .config import Config
from .model import GenerativeModel
from .nets import family
from .nets.layers import Maxout, OutputDropout, RunBatchNorm, RunLinear
from .nets.parts import MarginalDiscriminator

NETWORKS = ("encoder", "decoder", "disc_marginal", "disc_x", "disc_z", "disc_joint", "disc_xx",
            "disc_zz")
"""Every network a model may have, in the order they are printed (a model has a subset)."""
TITLES = {"encoder": "G_z(x), encoder", "decoder": "G_x(z), decoder", "disc_x": "D(x)",
          "disc_z": "D(z)", "disc_joint": "D(x, z)",
          "disc_marginal": "D(x), the GAN's discriminator", "disc_xx": "D(x, x'), ALAD",
          "disc_zz": "D(z, z'), ALAD"}
_ACTS = {nn.LeakyReLU: "lrelu", nn.ReLU: "relu", Maxout: "maxout", nn.Sigmoid: "sigmoid"}


def _op(m: nn.Module) -> str | None:
    if isinstance(m, nn.ConvTranspose2d):
        return "convT"
    if isinstance(m, nn.Conv2d):
        return "conv"
    if isinstance(m, (nn.Linear, RunLinear)):
        return "linear"
    return None


def _layers(net: nn.Module) -> list[dict[str, Any]]:
    """Group ``net``'s leaf modules (in forward order) into table rows."""
    rows: list[dict[str, Any]] = []
    dropout = 0.0
    for m in net.modules():
        if list(m.children()):
            continue
        op = _op(m)
        if isinstance(m, OutputDropout) and rows:
            rows[-1]["dropout_out"] = m.p
            rows[-1]["_modules"].append(m)
        elif isinstance(m, nn.Dropout):
            dropout = m.p
        elif op is not None:
            if op == "linear":
                kernel = stride = None
                maps = m.out_features if isinstance(m, nn.Linear) else m.weight.shape[-1]
            else:
                kernel, stride, maps = m.kernel_size[0], m.stride[0], m.out_channels
            rows.append({"op": op, "kernel": kernel, "stride": stride, "out_channels": maps,
                         "bn": False, "dropout": dropout, "dropout_out": 0.0, "act": "linear",
                         "_modules": [m]})
            dropout = 0.0
        elif rows:
            row = rows[-1]
            row["_modules"].append(m)
            if isinstance(m, (nn.modules.batchnorm._BatchNorm, RunBatchNorm)):
                row["bn"] = True
            for cls, name in _ACTS.items():
                if isinstance(m, cls):
                    row["act"] = name
    return rows


def _shape(t: Tensor) -> list[int]:
    return list(t.shape[1:])


def _networks(model: GenerativeModel) -> dict[str, nn.Module]:
    """The networks of ``model`` by their key in :data:`NETWORKS` (a joint D as its three
    parts, as the paper's tables give it)."""
    nets: dict[str, nn.Module] = {}
    if model.encoder is not None:
        nets["encoder"] = model.encoder.net
    nets["decoder"] = model.decoder
    for attr in ("discriminator", "joint_discriminator"):
        d = getattr(model, attr, None)
        if isinstance(d, MarginalDiscriminator):
            nets["disc_marginal"] = d
        elif d is not None:
            nets.update(disc_x=d.d_x, disc_z=d.d_z, disc_joint=d.d_xz)
    for attr in ("d_xx", "d_zz"):
        if getattr(model, attr, None) is not None:
            nets[f"disc_{attr[2:]}"] = getattr(model, attr)
    return {k: nets[k] for k in NETWORKS if k in nets}


def _forward(model: GenerativeModel, x: Tensor, z: Tensor) -> None:
    """Run each network of ``model`` once, as training calls it."""
    # A conditional model's networks take the embedded condition too (Eq. 7): a batch of
    # class 0 (or of no attribute) is enough to trace their shapes.
    cond, v = (), None
    if model.embed is not None:
        y = torch.zeros(len(x), model.embed.label_dim, dtype=torch.long) \
            if model.embed.attributes else torch.zeros(len(x), dtype=torch.long)
        v = model.embed.vector(y)
        cond = (model.embed.embed(v, z.dim() - 2),)
    if model.encoder is not None:
        model.encoder(x, *cond)
    model.decoder(z, *cond)
    for attr in ("discriminator", "joint_discriminator"):
        d = getattr(model, attr, None)
        if isinstance(d, MarginalDiscriminator):
            d(x)
        elif d is not None:
            d(x, z) if v is None else d(x, z, v)
    for attr, a in (("d_xx", x), ("d_zz", z)):
        if getattr(model, attr, None) is not None:
            getattr(model, attr)(a, a)


def describe(cfg: Config) -> dict[str, Any]:
    """The JSON description of the networks of the model ``cfg`` builds (see ``ali arch
    --help``).

    Each layer dict also carries two private keys for the text table: ``_out`` (its output
    shape) and ``_params``; :func:`to_json` drops them.
    """
    m = cfg.model
    fam = family(m.nets)
    model = build_model(cfg)
    nets = _networks(model)
    info: dict[str, dict[str, Any]] = {}
    hooks = []
    for name, net in nets.items():
        rows = _layers(net)
        info[name] = {"params": sum(p.numel() for p in net.parameters()), "layers": rows}

        def whole(mod, args, out, name=name):
            info[name]["in_shape"], info[name]["out_shape"] = _shape(args[0]), _shape(out)

        hooks.append(net.register_forward_hook(whole))
        for row in rows:
            row["_params"] = sum(p.numel() for mod in row["_modules"] for p in mod.parameters())

            def layer(mod, args, out, row=row):
                row["_out"] = _shape(out)

            hooks.append(row["_modules"][-1].register_forward_hook(layer))
    data_shape, latent_shape = fam.data_shape(m), fam.latent_shape(m)
    model.eval()
    try:
        with torch.no_grad():
            _forward(model, torch.rand(2, *data_shape), torch.randn(2, *latent_shape))
    finally:
        for h in hooks:
            h.remove()
    for row in (r for v in info.values() for r in v["layers"]):
        del row["_modules"]
    # The totals are the model's own: they include what no table shows (the condition
    # embeddings, a Gaussian VAE's output scale).
    params = {"generator": sum(p.numel() for p in model.parameters_g()),
              "discriminator": sum(p.numel() for p in model.parameters_d())}
    return {"name": cfg.name, "kind": m.kind, "latent_dim": m.latent_dim,
            "image_shape": list(data_shape), "params": params,
            "networks": {k: {"params": v["params"], "in_shape": v["in_shape"],
                             "out_shape": v["out_shape"], "layers": v["layers"]}
                         for k, v in info.items()},
            "_notes": list(getattr(fam, "NOTES", ()))}


def to_json(desc: dict[str, Any]) -> dict[str, Any]:
    """``desc`` without the private keys (those starting with ``_``)."""
    if isinstance(desc, dict):
        return {k: to_json(v) for k, v in desc.items() if not k.startswith("_")}
    if isinstance(desc, list):
        return [to_json(v) for v in desc]
    return desc


def _dropout(row: dict[str, Any]) -> str:
    text = f"{row['dropout']:g}"
    return f"{text}, out {row['dropout_out']:g}" if row["dropout_out"] else text


def _dims(shape: list[int]) -> str:
    return "x".join(str(s) for s in shape)


def to_text(desc: dict[str, Any]) -> str:
    """The paper-style tables, one per network, with parameter counts and fidelity notes."""
    nets = desc["networks"]
    lines = [f"{desc['name']}: latent {desc['latent_dim']}, data {_dims(desc['image_shape'])}"]
    head = ("operation", "kernel", "stride", "maps", "BN", "dropout", "nonlinearity", "output",
            "params")
    for key, n in nets.items():
        lines += ["", f"{TITLES[key]}: {_dims(n['in_shape'])} -> {_dims(n['out_shape'])}, "
                      f"{n['params']:,} parameters"]
        rows = [head]
        for r in n["layers"]:
            k = "-" if r["kernel"] is None else f"{r['kernel']}x{r['kernel']}"
            s = "-" if r["stride"] is None else str(r["stride"])
            rows.append(({"conv": "convolution", "convT": "transposed conv",
                          "linear": "linear"}[r["op"]], k, s, str(r["out_channels"]),
                         "yes" if r["bn"] else "no", _dropout(r), r["act"],
                         _dims(r["_out"]), f"{r['_params']:,}"))
        if len(rows) == 1:
            lines.append("  (identity: no layers)")
            continue
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip()
                  for row in rows]
    g, d = desc["params"]["generator"], desc["params"]["discriminator"]
    parts = [f"{'encoder + decoder' if 'encoder' in nets else 'decoder'} {g:,}"]
    parts += [f"discriminator {d:,}"] if d else []
    lines += ["", f"total {g + d:,} parameters ({desc['kind']}): {', '.join(parts)}"]
    if desc.get("_notes"):
        lines += ["", "Notes:"]
        lines += [f"  - {note}" for note in desc["_notes"]]
    return "\n".join(lines)
