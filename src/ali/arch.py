"""Describe a config's five networks as tables like the paper's (``ali arch NAME``).

Every shape here comes from an actual forward pass (forward hooks on a batch of 2 in
evaluation mode), never from the tables themselves: a table and the network it builds cannot
drift apart unnoticed.

A network is described layer by layer. A layer starts at each conv, transposed conv or linear
module; a dropout just before it is its input dropout, and an output dropout
(:class:`~ali.nets.layers.OutputDropout`), the batch norm and the nonlinearity after it belong
to it.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from .config import Config
from .nets import family
from .nets.layers import Maxout, OutputDropout, RunBatchNorm, RunLinear

NETWORKS = ("encoder", "decoder", "disc_x", "disc_z", "disc_joint")
TITLES = {"encoder": "G_z(x), encoder", "decoder": "G_x(z), decoder", "disc_x": "D(x)",
          "disc_z": "D(z)", "disc_joint": "D(x, z)"}
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


def describe(cfg: Config) -> dict[str, Any]:
    """The JSON description of ``cfg``'s networks (see ``ali arch --help``).

    Each layer dict also carries two private keys for the text table: ``_out`` (its output
    shape) and ``_params``; :func:`to_json` drops them.
    """
    m = cfg.model
    fam = family(m.nets)
    enc, dec, disc = fam.encoder(m), fam.decoder(m), fam.discriminator(m, joint=True)
    # A conditional model's networks take the embedded condition too (Eq. 7): a batch of
    # class 0 (or of no attribute) is enough to trace their shapes.
    cond, v = (), None
    if m.conditional:
        from .nets.conv import condition_embedding

        y = torch.zeros(2, m.label_dim, dtype=torch.long) if m.attributes else \
            torch.zeros(2, dtype=torch.long)
        conditioning = condition_embedding(m)
        v = conditioning.vector(y)
        cond = (conditioning.embed(v, len(fam.latent_shape(m)) - 1),)
    nets = {"encoder": enc.net, "decoder": dec, "disc_x": disc.d_x, "disc_z": disc.d_z,
            "disc_joint": disc.d_xz}
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
    for net in (enc, dec, disc):
        net.eval()
    try:
        with torch.no_grad():
            x, z = torch.rand(2, *data_shape), torch.randn(2, *latent_shape)
            enc(x, *cond)
            dec(z, *cond)
            disc(x, z) if v is None else disc(x, z, v)
    finally:
        for h in hooks:
            h.remove()
    for row in (r for v in info.values() for r in v["layers"]):
        del row["_modules"]
    return {"name": cfg.name, "latent_dim": m.latent_dim, "image_shape": list(data_shape),
            "networks": {k: {"params": info[k]["params"], "in_shape": info[k]["in_shape"],
                             "out_shape": info[k]["out_shape"], "layers": info[k]["layers"]}
                         for k in NETWORKS},
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
    for key in NETWORKS:
        n = nets[key]
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
    g = nets["encoder"]["params"] + nets["decoder"]["params"]
    d = sum(nets[k]["params"] for k in ("disc_x", "disc_z", "disc_joint"))
    lines += ["", f"total {g + d:,} parameters: encoder + decoder {g:,}, discriminator {d:,}"]
    if desc.get("_notes"):
        lines += ["", "Notes:"]
        lines += [f"  - {note}" for note in desc["_notes"]]
    return "\n".join(lines)
