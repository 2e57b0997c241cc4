"""SVHN, 32x32x3 (the paper's Table 4), as the original code built it.

Latent 256, leaky ReLU slope 0.01 everywhere, no maxout. The encoder and decoder are CIFAR-10's
with a 512-map (2 x 256) encoder output and a 256-channel decoder input. D(x) is the encoder's
five convs, the first without batch norm; dropout 0.2 before every discriminator conv.

Differences from Table 4 (we follow the original code): none in the layers; D(z)'s convs have no
biases (``use_bias=False``; the table does not say). The last D conv
outputs a logit (the table's "Sigmoid" lives in the loss) and the decoder's last 1x1 conv has a
per-pixel bias (3 x 32 x 32) initialised from the data.
"""

from __future__ import annotations

from .cifar10 import DECODER as CIFAR10_DECODER
from .cifar10 import _encoder as cifar10_encoder
from .conv import ConvFamily, conv


# The encoder and decoder tables are CIFAR-10's (the latent size is set by the config).
_encoder, DECODER = cifar10_encoder, CIFAR10_DECODER


DISC_X = [
    conv(5, 1, 32, bn=False, dropout=0.2),
    conv(4, 2, 64, dropout=0.2),
    conv(4, 1, 128, dropout=0.2),
    conv(4, 2, 256, dropout=0.2),
    conv(4, 1, 512, dropout=0.2),                              # -> 512 x 1 x 1
]

DISC_Z = [
    conv(1, 1, 512, bn=False, bias=False, dropout=0.2),
    conv(1, 1, 512, bn=False, bias=False, dropout=0.2),
]

DISC_JOINT = [                                                 # input 512 + 512 = 1024
    conv(1, 1, 1024, bn=False, dropout=0.2),
    conv(1, 1, 1024, bn=False, dropout=0.2),
    conv(1, 1, 1, bn=False, dropout=0.2, act="linear"),       # logit
]

FAMILY = ConvFamily(
    image_shape=(3, 32, 32), slope=0.01, encoder=_encoder, decoder=DECODER, disc_x=DISC_X,
    disc_z=DISC_Z, disc_joint=DISC_JOINT,
    svm_layers=(3, 4, 5),  # k4s2-256 (256x4x4), k4s1-512, k1-512: the original code's
    notes=("layers as Table 4; D(z)'s convs have no biases (the original's use_bias=False)",
           "the last D conv outputs a logit; the table's sigmoid is in the loss",
           "decoder output bias is per pixel (3x32x32), initialised from the data"))

encoder, decoder, discriminator, latent_shape, data_shape = FAMILY.exports()
NOTES = FAMILY.notes
