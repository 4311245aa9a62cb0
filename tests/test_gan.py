import pytest
import torch
import torch.nn.functional as F

from srcore.data.dataset import PatchDataset
from srcore.errors import SrcoreError
from srcore.losses import (PerceptualLoss, discriminator_loss, generator_adversarial,
                           vgg_layer_index)
from srcore.models.discriminator import Discriminator
from srcore.models.rrdb import RRDBNet
from srcore.pretrained import load_features, load_lpips
from srcore.train.cnn import make_val_images
from srcore.train.gan import GanConfig, pretrain_disc, schedule, train_gan

from images import photo

CPU = torch.device("cpu")


def conv_macs(model, x):
    """Multiply-accumulates of every Conv2d and Linear in one forward pass."""
    total = []

    def hook(module, inputs, out):
        if isinstance(module, torch.nn.Conv2d):
            kh, kw = module.kernel_size
            total.append(out.numel() * module.in_channels * kh * kw // module.groups)
        elif isinstance(module, torch.nn.Linear):
            total.append(out.numel() * module.in_features)

    handles = [m.register_forward_hook(hook) for m in model.modules()]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return sum(total)


def test_discriminator_gives_one_logit_per_image_and_costs_less_than_the_generator():
    disc = Discriminator()
    assert disc(torch.rand(3, 3, 128, 128)).shape == (3,)
    assert disc(torch.rand(2, 3, 64, 96)).shape == (2,)
    d_cost = conv_macs(disc, torch.rand(1, 3, 128, 128))
    g_cost = conv_macs(RRDBNet(rrdb=2), torch.rand(1, 3, 32, 32))
    assert d_cost < g_cost / 4, (d_cost, g_cost)


def test_vgg_layer_names():
    import torchvision

    features = torchvision.models.vgg16().features
    assert vgg_layer_index(features, "conv1_1", "pre") == 0
    assert vgg_layer_index(features, "conv5_3", "pre") == 28
    assert vgg_layer_index(features, "conv5_3", "post") == 29
    with pytest.raises(ValueError):
        vgg_layer_index(features, "conv5_4", "post")  # VGG19 only


@pytest.fixture(scope="module")
def vgg16(weights_dir):
    return load_features(weights_dir, "vgg16")


def test_perceptual_loss_is_zero_for_identical_and_grows_with_blur(vgg16):
    loss = PerceptualLoss(vgg16, "conv3_3", "post")
    hr = torch.rand(2, 3, 64, 64) * 0.5 + torch.linspace(0, 0.5, 64)
    blurred = F.avg_pool2d(hr, 5, stride=1, padding=2, count_include_pad=False)
    assert loss(hr, hr).item() == 0
    slightly = F.avg_pool2d(hr, 3, stride=1, padding=1, count_include_pad=False)
    assert loss(blurred, hr).item() > loss(slightly, hr).item() > 0
    pre = PerceptualLoss(vgg16, "conv3_3", "pre")
    assert pre(blurred, hr).item() != pytest.approx(loss(blurred, hr).item(), rel=1e-3)


def test_gradients_reach_the_generator_not_vgg(vgg16):
    loss_fn = PerceptualLoss(vgg16, "conv2_2", "pre")
    generator = RRDBNet(rrdb=1, features=8, growth=8)
    sr = generator(torch.rand(1, 3, 16, 16))
    loss_fn(sr, torch.rand(1, 3, 64, 64)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in generator.conv_last.parameters())
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.vgg.parameters())
    loss_fn.train()
    assert not loss_fn.vgg.training


def test_adversarial_losses():
    high, low = torch.full((4,), 5.0), torch.full((4,), -5.0)
    assert generator_adversarial(high, None, False) < generator_adversarial(low, None, False)
    assert discriminator_loss(high, low, False) < 0.01  # confident and right
    assert discriminator_loss(low, high, False) > 4
    assert discriminator_loss(high, low, True) < discriminator_loss(low, high, True)
    assert generator_adversarial(low, high, True) > generator_adversarial(high, low, True)


def tiny_setup(weights_dir, **cfg):
    torch.manual_seed(0)
    generator = RRDBNet(rrdb=1, features=8, growth=8)
    disc = Discriminator(widths=(8, 16, 16, 16), hidden=(16, 8))
    data = PatchDataset([photo(64, 64, seed=i) for i in range(2)], patch_size=32,
                        patches_per_image=4, scale=4, kernel="bicubic", seed=0)
    val = make_val_images([photo(48, 48, seed=9)], 4, "bicubic")
    perceptual = PerceptualLoss(load_features(weights_dir, "vgg16"), "conv2_2", "post")
    config = GanConfig(rounds=1, epochs_per_round=1, batch_size=4, lr=1e-3, disc_lr=1e-3,
                       val_every=1, **cfg)
    return generator, disc, perceptual, data, val, config


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def changed(before, model):
    return not same(before, model.parameters())


@pytest.mark.parametrize("sched, loss, relativistic", [("alternate", "dual", False),
                                                        ("joint", "triad", True)])
def test_tiny_gan_runs_both_schedules(tmp_path, weights_dir, sched, loss, relativistic):
    generator, disc, perceptual, data, val, cfg = tiny_setup(
        weights_dir, schedule=sched, loss=loss, relativistic=relativistic)
    lpips_model = load_lpips(weights_dir)
    seen = []

    def check(row):
        seen.append(row)

    g0, d0 = params_of(generator), params_of(disc)
    summary = train_gan(generator, disc, perceptual, data, val, lpips_model, cfg, device=CPU,
                        precision="fp32", last_path=tmp_path / "last.pt", fingerprint="f",
                        on_epoch=check)
    assert [row["phase"] for row in seen] == schedule(cfg)
    assert changed(g0, generator) and changed(d0, disc)
    assert all("val_lpips" in row and "d_real" in row for row in seen)
    assert ("g_l1" in seen[0]) == (loss == "triad")
    assert summary["epochs_run"] == len(schedule(cfg))


def test_alternate_freezes_the_other_network(tmp_path, weights_dir):
    generator, disc, perceptual, data, val, cfg = tiny_setup(weights_dir)
    d_start = params_of(disc)
    snapshots = []
    train_gan(generator, disc, perceptual, data, val, load_lpips(weights_dir), cfg, device=CPU,
              precision="fp32", last_path=tmp_path / "last.pt", fingerprint="f",
              on_epoch=lambda row: snapshots.append((params_of(generator), params_of(disc))))
    (g_after_g, d_after_g), (g_after_d, d_after_d) = snapshots
    assert same(d_after_g, d_start) and not same(d_after_d, d_after_g)  # D frozen in G epoch
    assert same(g_after_d, g_after_g)  # G frozen in D epoch


def test_pretrain_disc_learns_real_from_fake(tmp_path, weights_dir):
    generator, disc, _, data, _, _ = tiny_setup(weights_dir)
    d0 = params_of(disc)
    summary = pretrain_disc(generator, disc, data, epochs=2, batch_size=4, lr=1e-3,
                            betas=(0.9, 0.999), relativistic=False, seed=0, num_workers=0,
                            device=CPU, precision="fp32", last_path=tmp_path / "d.pt",
                            fingerprint="f")
    assert changed(d0, disc) and len(summary["history"]) == 2
    assert {"d_loss", "d_accuracy", "d_real", "d_fake"} <= set(summary["final"])
    assert all(not p.requires_grad for p in generator.parameters())


def test_nan_stops_the_gan_with_the_term_named(tmp_path, weights_dir):
    generator, disc, perceptual, data, val, cfg = tiny_setup(weights_dir)
    data.images[0] = data.images[0].astype("float32") * float("nan")
    with pytest.raises(SrcoreError, match=r"epoch 1: the generator \w+ loss is nan"):
        train_gan(generator, disc, perceptual, data, val, load_lpips(weights_dir), cfg,
                  device=CPU, precision="fp32", last_path=tmp_path / "last.pt", fingerprint="f")
