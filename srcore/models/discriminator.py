"""The report's discriminator (its figure 4): 4 x (conv, LeakyReLU), average pool, MLP, logit.

The author's code used stride-1 convs up to 512 channels (~50 GFLOP per 128x128 patch, ten
times the generator). Here each conv has stride 2 (4x4 kernels, as DCGAN/SRGAN-style critics),
so a 128x128 patch costs ~0.4 GMAC, well under the 2-block generator that makes it (~2.9).
Its checkpoints are here, not in srcore.models.checkpoint beside the generator's: the stages that
load a generator (train_cnn, evaluate) would then depend on this file too.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from srcore.errors import SrcoreError
from srcore.models.checkpoint import load_checkpoint, load_weights, save_atomic

FORMAT = "srcore-discriminator"


class Discriminator(nn.Module):
    def __init__(self, widths=(64, 128, 256, 512), hidden=(256, 128)):
        super().__init__()
        layers, channels = [], 3
        for width in widths:
            layers += [nn.Conv2d(channels, width, 4, stride=2, padding=1),
                       nn.LeakyReLU(0.2, inplace=True)]
            channels = width
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)  # any patch size gives one vector per image
        self.classifier = nn.Sequential(
            nn.Linear(channels, hidden[0]), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden[0], hidden[1]), nn.LeakyReLU(0.2, inplace=True),
            nn.Linear(hidden[1], 1))
        self.config = {"widths": list(widths), "hidden": list(hidden)}

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(N, 3, H, W) RGB in [0, 1] -> (N,) logits: > 0 means 'real'."""
        return self.classifier(self.pool(self.features(x)).flatten(1)).squeeze(1)


def save_discriminator(path: Path, disc: Discriminator, **extra) -> None:
    save_atomic(path, {"format": FORMAT, "model": disc.config,
                       "state_dict": disc.state_dict(), **extra})


def load_discriminator(path: Path) -> Discriminator:
    """A discriminator saved by save_discriminator; any other file is named and refused."""
    ckpt = load_checkpoint(path)
    kind = ckpt.get("format") if isinstance(ckpt, dict) else None
    if kind != FORMAT:
        what = (f"a {kind} file, not a discriminator" if isinstance(kind, str)
                else "not a discriminator saved by srcore")
        raise SrcoreError(f"{path}: {what}; re-run the stage that makes it "
                          "(dvc repro --force pretrain_disc)")
    disc = Discriminator(**ckpt["model"])
    load_weights(disc, ckpt["state_dict"], path)
    return disc
