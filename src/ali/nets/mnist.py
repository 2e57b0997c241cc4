"""MNIST, 28x28x1: a small convolutional ALI of our own design (not in the paper), sized to
train in minutes on a CPU.

It keeps the paper's structure: Gaussian encoder (conv -> BN -> leaky ReLU, last 1x1 conv to
2L = 64 maps), transposed-conv decoder ending in a 1x1 conv with a per-pixel bias and a sigmoid,
D(x) convs (first without BN), a 1x1 D(z) and a 1x1 joint D(x, z), dropout 0.2 before every
discriminator conv, leaky ReLU slope 0.1, no padding.
"""

from __future__ import annotations

from .conv import ConvFamily, conv, convT


def _encoder(out: int):
    return [  #  kernel stride maps                              spatial
        conv(4, 2, 32),                                        # 28 -> 13
        conv(5, 2, 64),                                        # 13 -> 5
        conv(5, 1, 256),                                       # 5 -> 1
        conv(1, 1, out, bn=False, act="linear"),               # 2L = 64
    ]


DECODER = [
    convT(5, 1, 128),                                          # 1 -> 5
    convT(5, 2, 64),                                           # 5 -> 13
    convT(4, 2, 32),                                           # 13 -> 28
    conv(1, 1, 1, bn=False, act="sigmoid", pixel_bias=True),
]

DISC_X = [
    conv(4, 2, 32, bn=False, dropout=0.2),                     # 28 -> 13
    conv(5, 2, 64, dropout=0.2),                               # 13 -> 5
    conv(5, 1, 256, dropout=0.2),                              # 5 -> 1: 256 x 1 x 1
]

DISC_Z = [
    conv(1, 1, 256, bn=False, dropout=0.2),
    conv(1, 1, 256, bn=False, dropout=0.2),
]

DISC_JOINT = [                                                 # input 256 + 256 = 512
    conv(1, 1, 512, bn=False, dropout=0.2),
    conv(1, 1, 512, bn=False, dropout=0.2),
    conv(1, 1, 1, bn=False, dropout=0.2, act="linear"),       # logit
]

FAMILY = ConvFamily(
    image_shape=(1, 28, 28), slope=0.1, encoder=_encoder, decoder=DECODER, disc_x=DISC_X,
    disc_z=DISC_Z, disc_joint=DISC_JOINT,
    svm_layers=(1, 2),  # k5s2-64 (64x5x5), k5s1-256: the hidden layers after the first
    notes=("our own design (the paper has no MNIST model)",))

encoder, decoder, discriminator, latent_shape, data_shape = FAMILY.exports()
NOTES = FAMILY.notes
