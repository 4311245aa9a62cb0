"""The report's discriminator (its figure 4): 4 x (conv, LeakyReLU), average pool, MLP, logit.

The author's code used stride-1 convs up to 512 channels (~50 GFLOP per 128x128 patch, ten
times the generator). Here each conv has stride 2 (4x4 kernels, as DCGAN/SRGAN-style critics),
so a 128x128 patch costs ~0.4 GMAC, well under the 2-block generator that makes it (~2.9).
"""

from __future__ import annotations

import torch
from torch import nn


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
