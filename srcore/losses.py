"""Generator and discriminator losses of the GAN phase: perceptual (VGG) and adversarial."""

from __future__ import annotations

import re

import torch
import torch.nn.functional as F
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def vgg_layer_index(features: nn.Sequential, layer: str, activation: str) -> int:
    """Index in torchvision's vgg.features of conv{block}_{n} (pre) or of its ReLU (post)."""
    match = re.fullmatch(r"conv(\d)_(\d)", layer)
    if not match:
        raise ValueError(f"layer {layer!r} is not of the form convB_N, e.g. conv5_4")
    block, conv = 1, 0
    for index, module in enumerate(features):
        if isinstance(module, nn.MaxPool2d):
            block, conv = block + 1, 0
        elif isinstance(module, nn.Conv2d):
            conv += 1
            if (block, conv) == (int(match[1]), int(match[2])):
                return index if activation == "pre" else index + 1
    raise ValueError(f"layer {layer} does not exist in this VGG")


class PerceptualLoss(nn.Module):
    """Report eq. 5: mean squared distance between VGG feature maps of SR and HR.

    Inputs are RGB in [0, 1], ImageNet-normalised before VGG. The VGG is frozen: eval mode, no
    gradients into its weights (gradients still flow through it into the generator).
    """

    def __init__(self, features: nn.Sequential, layer: str, activation: str):
        super().__init__()
        last = vgg_layer_index(features, layer, activation)
        self.vgg = features[: last + 1].eval().requires_grad_(False)
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # always: frozen statistics, no dropout
        return self

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.vgg((x - self.mean) / self.std)

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            target = self.features(gt)
        return F.mse_loss(self.features(sr).float(), target.float())


def generator_adversarial(fake_logits: torch.Tensor, real_logits: torch.Tensor | None,
                          relativistic: bool) -> torch.Tensor:
    """Report eq. 6, non-saturating -log D(G(x)); or ESRGAN's relativistic average version."""
    if not relativistic:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    real_rel = real_logits - fake_logits.mean()
    fake_rel = fake_logits - real_logits.mean()
    return (F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
            + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel))) / 2


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       relativistic: bool) -> torch.Tensor:
    """Binary cross entropy: real -> 1, fake -> 0 (relativistic: each relative to the other)."""
    if relativistic:
        real_logits, fake_logits = (real_logits - fake_logits.mean(),
                                    fake_logits - real_logits.mean())
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))) / 2
