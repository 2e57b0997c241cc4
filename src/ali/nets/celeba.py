"""CelebA, 64x64x3 (the paper's Table 5), as the original code built it.

Latent 256, leaky ReLU slope 0.02, no maxout. D(x) is the encoder's first five convs, the first
without batch norm; dropout 0.2 before every discriminator conv.

Differences from Table 5 (we follow the original code):

- D(x, z) input is 512 + 1024 = 1536 channels (the table says 1024).
- D(x): the first conv has no batch norm (with a bias), and every D(x) conv has dropout 0.2 on
  its input (the table shows batch norm everywhere and no dropout).
- D(z)'s convs have no biases (the original's ``use_bias=False``; the table does not say).
- The decoder's input is z, 256 x 1 x 1 (the table says 512: the encoder's 512 output maps are
  mu and log sigma of a 256-d z).
- The table gives no beta2; we use the others' (PyTorch 0.999).
- The last D conv outputs a logit (the table's "Sigmoid" lives in the loss); the decoder's last
  1x1 conv has a per-pixel bias (3 x 64 x 64) initialised from the data.
"""

from __future__ import annotations

from .conv import ConvFamily, conv, convT


def _encoder(out: int):
    return [  #  kernel stride maps                              spatial
        conv(2, 1, 64),                                        # 64 -> 63
        conv(7, 2, 128),                                       # 63 -> 29
        conv(5, 2, 256),                                       # 29 -> 13
        conv(7, 2, 256),                                       # 13 -> 4
        conv(4, 1, 512),                                       # 4 -> 1
        conv(1, 1, out, bn=False, act="linear"),               # 2L = 512
    ]


DECODER = [
    convT(4, 1, 512),                                          # 1 -> 4
    convT(7, 2, 256),                                          # 4 -> 13
    convT(5, 2, 256),                                          # 13 -> 29
    convT(7, 2, 128),                                          # 29 -> 63
    convT(2, 1, 64),                                           # 63 -> 64
    conv(1, 1, 3, bn=False, act="sigmoid", pixel_bias=True),
]

DISC_X = [
    conv(2, 1, 64, bn=False, dropout=0.2),
    conv(7, 2, 128, dropout=0.2),
    conv(5, 2, 256, dropout=0.2),
    conv(7, 2, 256, dropout=0.2),
    conv(4, 1, 512, dropout=0.2),                              # -> 512 x 1 x 1
]

DISC_Z = [
    conv(1, 1, 1024, bn=False, bias=False, dropout=0.2),
    conv(1, 1, 1024, bn=False, bias=False, dropout=0.2),
]

DISC_JOINT = [                                                 # input 512 + 1024 = 1536
    conv(1, 1, 2048, bn=False, dropout=0.2),
    conv(1, 1, 2048, bn=False, dropout=0.2),
    conv(1, 1, 1, bn=False, dropout=0.2, act="linear"),       # logit
]

FAMILY = ConvFamily(
    image_shape=(3, 64, 64), slope=0.02, encoder=_encoder, decoder=DECODER, disc_x=DISC_X,
    disc_z=DISC_Z, disc_joint=DISC_JOINT,
    svm_layers=(3, 4),  # k7s2-256 (256x4x4), k4s1-512: as SVHN's 4x4 and 1x1 layers
    notes=("D(x,z) input 1536 channels (512 + 1024), not the table's 1024",
           "D(x): first conv without BN, dropout 0.2 before every conv (table: BN, no dropout)",
           "D(z)'s convs have no biases (the original's use_bias=False)",
           "decoder input is z, 256x1x1 (the table's 512 is the encoder's mu and log sigma)",
           "the last D conv outputs a logit; the table's sigmoid is in the loss",
           "decoder output bias is per pixel (3x64x64), initialised from the data"))

encoder, decoder, discriminator, latent_shape, data_shape = FAMILY.exports()
NOTES = FAMILY.notes
