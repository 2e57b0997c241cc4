"""CIFAR-10, 32x32x3 (the paper's Table 3), as the original code built it.

Latent 64, leaky ReLU slope 0.1, maxout with 2 contiguous pieces in the discriminator (which has
no batch norm). As in the original code, only D(x)'s first conv and the joint convs have biases
(``use_bias=False`` on D(x) and D(z), switched back on for D(x)'s first layer).

Differences from Table 3 (we follow the original code):

- D(x, z) input is 512 channels, not 1024: maxout halves D(x)'s 512 maps to 256 and D(z)'s
  512 to 256. Likewise the joint convs have 1024 maps but hand 512 on.
- D(x) has no dropout before its k4s2 256 conv (the table shows 0.5 there).
- The last D conv outputs a logit; the table's "Sigmoid" lives in the loss.
- The decoder's last 1x1 conv has a per-pixel bias (3 x 32 x 32) initialised from the data.
"""

from __future__ import annotations

from .conv import ConvFamily, conv, convT


def _encoder(out: int):
    return [  #  kernel stride maps                              spatial
        conv(5, 1, 32),                                        # 32 -> 28
        conv(4, 2, 64),                                        # 28 -> 13
        conv(4, 1, 128),                                       # 13 -> 10
        conv(4, 2, 256),                                       # 10 -> 4
        conv(4, 1, 512),                                       # 4 -> 1
        conv(1, 1, 512),
        conv(1, 1, out, bn=False, act="linear"),               # 2L = 128
    ]


DECODER = [
    convT(4, 1, 256),                                          # 1 -> 4
    convT(4, 2, 128),                                          # 4 -> 10
    convT(4, 1, 64),                                           # 10 -> 13
    convT(4, 2, 32),                                           # 13 -> 28
    convT(5, 1, 32),                                           # 28 -> 32
    conv(1, 1, 32),
    conv(1, 1, 3, bn=False, act="sigmoid", pixel_bias=True),
]

DISC_X = [
    conv(5, 1, 32, bn=False, dropout=0.2, act="maxout"),
    conv(4, 2, 64, bn=False, bias=False, dropout=0.5, act="maxout"),
    conv(4, 1, 128, bn=False, bias=False, dropout_out=0.5, act="maxout"),
    conv(4, 2, 256, bn=False, bias=False, act="maxout"),
    conv(4, 1, 512, bn=False, bias=False, dropout=0.5, act="maxout"),   # -> 256 x 1 x 1
]

DISC_Z = [
    conv(1, 1, 512, bn=False, bias=False, dropout=0.2, act="maxout"),
    conv(1, 1, 512, bn=False, bias=False, dropout=0.5, act="maxout"),   # -> 256 x 1 x 1
]

DISC_JOINT = [                                                 # input 256 + 256 = 512
    conv(1, 1, 1024, bn=False, dropout=0.5, act="maxout"),
    conv(1, 1, 1024, bn=False, dropout=0.5, act="maxout"),
    conv(1, 1, 1, bn=False, dropout=0.5, act="linear"),       # logit
]

FAMILY = ConvFamily(
    image_shape=(3, 32, 32), slope=0.1, encoder=_encoder, decoder=DECODER, disc_x=DISC_X,
    disc_z=DISC_Z, disc_joint=DISC_JOINT, pieces=2,
    svm_layers=(3, 4, 5),  # k4s2-256 (256x4x4), k4s1-512, k1-512: the original code's
    notes=("D(x,z) input 512 channels, not the table's 1024: maxout halves D(x) and D(z)",
           "D(x): 0.5 dropout on the 128 conv's output, not before the 128 and 256 convs",
           "no biases in D(x) after its first conv, nor in D(z) (the original's use_bias=False)",
           "the last D conv outputs a logit; the table's sigmoid is in the loss",
           "decoder output bias is per pixel (3x32x32), initialised from the data"))

encoder, decoder, discriminator, latent_shape, data_shape = FAMILY.exports()
NOTES = FAMILY.notes
