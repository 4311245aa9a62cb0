"""Generator and discriminator losses of the GAN phase: perceptual (VGG) and adversarial."""

from __future__ import annotations

import copy
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
    """Weighted distance between VGG feature maps of SR and HR, summed over layers.

    layers=[conv5_3], weights=[1], criterion l2, post-activation is the report's eq. 5 (SRGAN);
    conv1_2, conv2_2, conv3_x, conv4_x, conv5_x with weights 0.1, 0.1, 1, 1, 1, L1, before the
    activation is Real-ESRGAN's. Inputs are RGB in [0, 1], ImageNet-normalised before VGG. The
    VGG is frozen: eval mode, no gradients into its weights (they still flow into the generator).
    """

    def __init__(self, features: nn.Sequential, layers: list[str], weights: list[float],
                 activation: str, criterion: str):
        super().__init__()
        if len(layers) != len(weights):
            raise ValueError(f"{len(layers)} layers but {len(weights)} weights")
        if criterion not in ("l1", "l2"):
            raise ValueError(f"criterion must be l1 or l2, not {criterion!r}")
        self.taps = [vgg_layer_index(features, layer, activation) for layer in layers]
        self.weights = list(weights)
        self.distance = F.l1_loss if criterion == "l1" else F.mse_loss
        self.vgg = copy.deepcopy(features[: max(self.taps) + 1]).eval().requires_grad_(False)
        for module in self.vgg:
            if isinstance(module, nn.ReLU):
                module.inplace = False  # an in-place ReLU would overwrite a pre-activation tap
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    @classmethod
    def from_params(cls, features: nn.Sequential, perceptual) -> "PerceptualLoss":
        """From params.yaml's gan.perceptual section."""
        return cls(features, perceptual.layers, perceptual.layer_weights,
                   perceptual.activation, perceptual.criterion)

    def train(self, mode: bool = True):
        super().train(mode)
        self.vgg.eval()  # always: frozen statistics, no dropout
        return self

    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The feature maps at the chosen layers, in the order the layers were given."""
        x = (x - self.mean) / self.std
        found = {}
        for index, module in enumerate(self.vgg):
            x = module(x)
            if index in self.taps:
                found[index] = x
        return [found[index] for index in self.taps]

    def forward(self, sr: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            targets = self.features(gt)
        return sum(weight * self.distance(feat.float(), target.float())
                   for weight, feat, target in zip(self.weights, self.features(sr), targets))


def relative_logits(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                    mean=torch.mean) -> tuple[torch.Tensor, torch.Tensor]:
    """ESRGAN's relativistic average logits: each relative to the other batch's `mean` (the
    global batch's under several processes)."""
    return real_logits - mean(fake_logits), fake_logits - mean(real_logits)


def generator_adversarial(fake_logits: torch.Tensor, real_logits: torch.Tensor | None,
                          relativistic: bool, mean=torch.mean) -> torch.Tensor:
    """Report eq. 6, non-saturating -log D(G(x)); or ESRGAN's relativistic average version.
    `mean`: the batch mean (the global batch's under several processes)."""
    if not relativistic:
        return F.binary_cross_entropy_with_logits(fake_logits, torch.ones_like(fake_logits))
    real_rel, fake_rel = relative_logits(real_logits, fake_logits, mean)
    return (F.binary_cross_entropy_with_logits(real_rel, torch.zeros_like(real_rel))
            + F.binary_cross_entropy_with_logits(fake_rel, torch.ones_like(fake_rel))) / 2


def discriminator_loss(real_logits: torch.Tensor, fake_logits: torch.Tensor,
                       relativistic: bool, mean=torch.mean) -> torch.Tensor:
    """Binary cross entropy: real -> 1, fake -> 0 (relativistic: each relative to the other's
    `mean`, the global batch's under several processes)."""
    if relativistic:
        real_logits, fake_logits = relative_logits(real_logits, fake_logits, mean)
    return (F.binary_cross_entropy_with_logits(real_logits, torch.ones_like(real_logits))
            + F.binary_cross_entropy_with_logits(fake_logits, torch.zeros_like(fake_logits))) / 2
