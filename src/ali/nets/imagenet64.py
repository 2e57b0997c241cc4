"""Tiny ImageNet = ILSVRC2012 downsampled to 64x64x3 (the paper's Table 6), as the original code
built it.

Latent 256, leaky ReLU slope 0.01, no maxout, batch 128. D(x) is the encoder's six 4x4 convs,
the first without batch norm; dropout 0.2 before every discriminator conv.

Differences from Table 6 (we follow the original code): none in the layers. The last D conv
outputs a logit (the table's "Sigmoid" lives in the loss) and the decoder's last 1x1 conv has a
per-pixel bias (3 x 64 x 64) initialised from the data.
"""

from __future__ import annotations

from .conv import ConvFamily, conv, convT


def _encoder(out: int):
    return [  #  kernel stride maps                              spatial
        conv(4, 2, 64),                                        # 64 -> 31
        conv(4, 1, 64),                                        # 31 -> 28
        conv(4, 2, 128),                                       # 28 -> 13
        conv(4, 1, 128),                                       # 13 -> 10
        conv(4, 2, 256),                                       # 10 -> 4
        conv(4, 1, 256),                                       # 4 -> 1
        conv(1, 1, 2048),
        conv(1, 1, 2048),
        conv(1, 1, out, bn=False, act="linear"),               # 2L = 512
    ]


DECODER = [
    conv(1, 1, 2048),
    conv(1, 1, 256),
    convT(4, 1, 256),                                          # 1 -> 4
    convT(4, 2, 128),                                          # 4 -> 10
    convT(4, 1, 128),                                          # 10 -> 13
    convT(4, 2, 64),                                           # 13 -> 28
    convT(4, 1, 64),                                           # 28 -> 31
    convT(4, 2, 64),                                           # 31 -> 64
    conv(1, 1, 3, bn=False, act="sigmoid", pixel_bias=True),
]

DISC_X = [
    conv(4, 2, 64, bn=False, dropout=0.2),
    conv(4, 1, 64, dropout=0.2),
    conv(4, 2, 128, dropout=0.2),
    conv(4, 1, 128, dropout=0.2),
    conv(4, 2, 256, dropout=0.2),
    conv(4, 1, 256, dropout=0.2),                              # -> 256 x 1 x 1
]

DISC_Z = [
    conv(1, 1, 2048, bn=False, dropout=0.2),
    conv(1, 1, 2048, bn=False, dropout=0.2),
]

DISC_JOINT = [                                                 # input 256 + 2048 = 2304
    conv(1, 1, 4096, bn=False, dropout=0.2),
    conv(1, 1, 4096, bn=False, dropout=0.2),
    conv(1, 1, 1, bn=False, dropout=0.2, act="linear"),       # logit
]

FAMILY = ConvFamily(
    image_shape=(3, 64, 64), slope=0.01, encoder=_encoder, decoder=DECODER, disc_x=DISC_X,
    disc_z=DISC_Z, disc_joint=DISC_JOINT,
    svm_layers=(5, 6, 7),  # k4s1-256, k1-2048, k1-2048: the last three hidden layers
    notes=("layers as Table 6",
           "the last D conv outputs a logit; the table's sigmoid is in the loss",
           "decoder output bias is per pixel (3x64x64), initialised from the data"))

encoder, decoder, discriminator, latent_shape, data_shape = FAMILY.exports()
NOTES = FAMILY.notes
