"""A minuscule image family for tests: 8x8x3 images, a few channels per layer.

It exercises every building block of the paper's families: conv and transposed conv, batch norm
and none, dropout before discriminator convs, leaky ReLU and maxout (2 pieces, in D(z)), the
per-pixel decoder bias and the sigmoid.
"""

from __future__ import annotations

from .conv import ConvFamily, conv, convT


def _encoder(out: int):
    return [  #  kernel stride maps                              spatial
        conv(4, 2, 8),                                         # 8 -> 3
        conv(3, 1, 16),                                        # 3 -> 1
        conv(1, 1, out, bn=False, act="linear"),
    ]


DECODER = [
    convT(3, 1, 16),                                           # 1 -> 3
    convT(4, 2, 8),                                            # 3 -> 8
    conv(1, 1, 3, bn=False, act="sigmoid", pixel_bias=True),
]

DISC_X = [
    conv(4, 2, 8, bn=False, dropout=0.2),
    conv(3, 1, 16, dropout=0.2),                               # -> 16 x 1 x 1
]

DISC_Z = [
    conv(1, 1, 16, bn=False, dropout=0.2, act="maxout"),      # -> 8 x 1 x 1
]

DISC_JOINT = [                                                 # input 16 + 8 = 24
    conv(1, 1, 32, bn=False, dropout=0.5, act="maxout"),
    conv(1, 1, 1, bn=False, dropout=0.5, act="linear"),       # logit
]

FAMILY = ConvFamily(
    image_shape=(3, 8, 8), slope=0.1, encoder=_encoder, decoder=DECODER, disc_x=DISC_X,
    disc_z=DISC_Z, disc_joint=DISC_JOINT, pieces=2, svm_layers=(0, 1),
    notes=("a test family, not in the paper",))

encoder, decoder, discriminator, latent_shape, data_shape = FAMILY.exports()
NOTES = FAMILY.notes
