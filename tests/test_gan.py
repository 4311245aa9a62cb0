import pytest
import torch
import torch.nn.functional as F

from srcore.data.dataset import PatchDataset
from srcore.errors import SrcoreError
from srcore.losses import (IMAGENET_MEAN, IMAGENET_STD, PerceptualLoss, discriminator_loss,
                           generator_adversarial, vgg_layer_index)
from srcore.models.discriminator import Discriminator
from srcore.models.rrdb import RRDBNet
from srcore.pretrained import load_features, load_lpips
from srcore.train.gan import d_stats, phase_of, pretrain_disc, train_gan
from srcore.train.validate import make_val_images

from conftest import params_with
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
    vgg19 = torchvision.models.vgg19().features  # BasicSR's NAMES: conv5_4 at 34, relu5_4 at 35
    assert vgg_layer_index(vgg19, "conv5_4", "pre") == 34
    assert vgg_layer_index(vgg19, "conv5_4", "post") == 35


@pytest.fixture(scope="module")
def vgg16(weights_dir):
    return load_features(weights_dir, "vgg16")


REAL_ESRGAN = (["conv1_2", "conv2_2", "conv3_3", "conv4_3", "conv5_3"], [0.1, 0.1, 1, 1, 1])


def test_perceptual_loss_is_zero_for_identical_and_grows_with_blur(vgg16):
    hr = torch.rand(2, 3, 64, 64) * 0.5 + torch.linspace(0, 0.5, 64)
    blurred = F.avg_pool2d(hr, 5, stride=1, padding=2, count_include_pad=False)
    slightly = F.avg_pool2d(hr, 3, stride=1, padding=1, count_include_pad=False)
    for loss in (PerceptualLoss(vgg16, ["conv3_3"], [1.0], "post", "l2"),
                 PerceptualLoss(vgg16, *REAL_ESRGAN, "pre", "l1")):
        assert loss(hr, hr).item() == 0
        assert loss(blurred, hr).item() > loss(slightly, hr).item() > 0


def test_perceptual_features_have_the_layers_shapes_in_the_given_order(vgg16):
    loss = PerceptualLoss(vgg16, *REAL_ESRGAN, "pre", "l1")
    feats = loss.features(torch.rand(1, 3, 64, 64))
    assert [tuple(f.shape[1:]) for f in feats] == [(64, 64, 64), (128, 32, 32), (256, 16, 16),
                                                   (512, 8, 8), (512, 4, 4)]
    shuffled = PerceptualLoss(vgg16, ["conv3_3", "conv1_2"], [1, 1], "pre", "l1")
    assert [f.shape[1] for f in shuffled.features(torch.rand(1, 3, 32, 32))] == [256, 64]
    with pytest.raises(ValueError, match="conv3_4"):
        PerceptualLoss(vgg16, ["conv3_4"], [1.0], "pre", "l1")  # VGG19 only
    with pytest.raises(ValueError, match="weights"):
        PerceptualLoss(vgg16, ["conv3_3", "conv5_3"], [1.0], "pre", "l1")


def test_pre_activation_taps_are_the_conv_outputs_untouched_by_the_relu(vgg16):
    x = torch.rand(1, 3, 32, 32)
    normalised = (x - torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)) / torch.tensor(
        IMAGENET_STD).view(1, 3, 1, 1)
    conv1_2 = vgg16[:3](normalised)  # conv1_1, relu, conv1_2: before its ReLU
    pre = PerceptualLoss(vgg16, ["conv1_2", "conv2_2"], [1, 1], "pre", "l1").features(x)[0]
    post = PerceptualLoss(vgg16, ["conv1_2", "conv2_2"], [1, 1], "post", "l1").features(x)[0]
    assert torch.allclose(pre, conv1_2, atol=1e-5)  # the next (in-place) ReLU left it alone
    assert pre.min() < 0 and post.min() >= 0
    assert torch.allclose(post, F.relu(conv1_2), atol=1e-5)
    assert all(m.inplace for m in vgg16 if isinstance(m, torch.nn.ReLU))  # the caller's VGG


def test_perceptual_loss_is_the_weighted_sum_of_its_layers_distances(vgg16):
    sr, gt = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    layers, weights = REAL_ESRGAN
    for criterion, distance in (("l1", F.l1_loss), ("l2", F.mse_loss)):
        whole = PerceptualLoss(vgg16, layers, weights, "pre", criterion)
        feats_sr, feats_gt = whole.features(sr), whole.features(gt)
        expected = sum(w * distance(a, b) for w, a, b in zip(weights, feats_sr, feats_gt))
        assert whole(sr, gt).item() == pytest.approx(expected.item(), rel=1e-5)
        single = PerceptualLoss(vgg16, ["conv2_2"], [0.5], "pre", criterion)
        assert single(sr, gt).item() == pytest.approx(
            0.5 * distance(feats_sr[1], feats_gt[1]).item(), rel=1e-5)


def test_gradients_reach_the_generator_not_vgg(vgg16):
    loss_fn = PerceptualLoss(vgg16, *REAL_ESRGAN, "pre", "l1")
    generator = RRDBNet(rrdb=1, features=8, growth=8)
    sr = generator(torch.rand(1, 3, 16, 16))
    loss_fn(sr, torch.rand(1, 3, 64, 64)).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0
               for p in generator.conv_last.parameters())
    assert all(p.grad is None and not p.requires_grad for p in loss_fn.vgg.parameters())
    assert all(p.grad is None for p in vgg16.parameters())
    loss_fn.train()
    assert not loss_fn.vgg.training


def test_adversarial_losses():
    high, low = torch.full((4,), 5.0), torch.full((4,), -5.0)
    assert generator_adversarial(high, None, False) < generator_adversarial(low, None, False)
    assert discriminator_loss(high, low, False) < 0.01  # confident and right
    assert discriminator_loss(low, high, False) > 4
    assert discriminator_loss(high, low, True) < discriminator_loss(low, high, True)
    assert generator_adversarial(low, high, True) > generator_adversarial(high, low, True)


def test_relativistic_losses_are_esrgans_with_gradients_through_both_means():
    """ESRGAN's RaGAN (its BasicSR esrgan_model.py): G's loss also pulls D(real) - mean D(fake)
    down through mean D(fake); D's loss trains both branches, each through the other's mean."""
    bce = F.binary_cross_entropy_with_logits
    torch.manual_seed(0)
    real, fake = torch.randn(6, requires_grad=True), torch.randn(6, requires_grad=True)
    zeros, ones = torch.zeros(6), torch.ones(6)
    pairs = [
        (generator_adversarial(fake, real.detach(), True),
         (bce(real.detach() - fake.mean(), zeros) + bce(fake - real.detach().mean(), ones)) / 2),
        (discriminator_loss(real, fake, True),
         (bce(real - fake.mean(), ones) + bce(fake - real.mean(), zeros)) / 2)]
    for ours, reference in pairs:
        assert torch.allclose(ours, reference)
        assert all(torch.allclose(a, b) for a, b in zip(
            torch.autograd.grad(ours, (real, fake), allow_unused=True, materialize_grads=True),
            torch.autograd.grad(reference, (real, fake), allow_unused=True,
                                materialize_grads=True)))


def test_d_stats_of_a_relativistic_discriminator_are_relative():
    """A relativistic D's loss sees only C(real) - mean C(fake) and the reverse: its logits may
    all drift above 0 while it separates real from fake perfectly; its logged accuracy and mean
    outputs must be those its loss judges, not those of the raw logits."""
    real, fake = torch.full((4,), 11.0), torch.full((4,), 9.0)
    stats = d_stats(real, fake, relativistic=True)
    assert stats["d_accuracy"] == 1.0
    assert torch.isclose(stats["d_real"], torch.sigmoid(torch.tensor(2.0)))
    assert torch.isclose(stats["d_fake"], torch.sigmoid(torch.tensor(-2.0)))
    # a D that cannot tell them apart (equal logits, as bf16 rounds a near-constant D) is at
    # chance, not always wrong
    for relativistic in (True, False):
        tie = d_stats(torch.zeros(4), torch.zeros(4), relativistic)
        assert tie["d_accuracy"] == 0.5
    assert d_stats(real, real.clone(), relativistic=True)["d_accuracy"] == 0.5
    plain = d_stats(real, fake, relativistic=False)  # the standard D: both called real
    assert plain["d_accuracy"] == 0.5 and torch.isclose(plain["d_fake"],
                                                        torch.sigmoid(torch.tensor(9.0)))


def tiny_setup(weights_dir, **overrides):
    torch.manual_seed(0)
    generator = RRDBNet(rrdb=1, features=8, growth=8)
    disc = Discriminator(widths=(8, 16, 16, 16), hidden=(16, 8))
    data = PatchDataset([photo(64, 64, seed=i) for i in range(2)], patch_size=32,
                        patches_per_image=4, scale=4, kernel="bicubic", seed=0)
    val = make_val_images([photo(48, 48, seed=9)], 4, "bicubic")
    perceptual = PerceptualLoss(load_features(weights_dir, "vgg16"), ["conv2_2"], [1.0], "post", "l2")
    params = params_with(**{"gan__rounds": 1, "gan__g_steps": 2, "gan__d_steps": 2,
                            "gan__batch_size": 4, "gan__lr": 1e-3, "disc__lr": 1e-3,
                            "gan__val_every": 1, "train__log_every": 1,
                            "train__checkpoint_every": 1, "disc__pretrain_steps": 2,
                            **overrides})
    return generator, disc, perceptual, data, val, params


def run_gan(tmp_path, weights_dir, parts, **kw):
    generator, disc, perceptual, data, val, params = parts
    return train_gan(generator, disc, perceptual, data, val, load_lpips(weights_dir), params.gan,
                     params.train, disc_lr=params.disc.lr, seed=0, crop_border=4, device=CPU,
                     precision="fp32", last_path=tmp_path / "last.pt", key="k", **kw)


def params_of(model):
    return [p.detach().clone() for p in model.parameters()]


def same(a, b):
    return all(torch.equal(x, y) for x, y in zip(a, b))


def changed(before, model):
    return not same(before, model.parameters())


@pytest.mark.parametrize("sched, loss, relativistic", [("alternate", "dual", False),
                                                        ("joint", "triad", True)])
def test_tiny_gan_runs_both_schedules(tmp_path, weights_dir, sched, loss, relativistic):
    parts = tiny_setup(weights_dir, gan__schedule=sched, gan__loss=loss,
                       gan__relativistic=relativistic)
    generator, disc, _, _, _, params = parts
    rows, validated = [], []
    g0, d0 = params_of(generator), params_of(disc)
    summary = run_gan(tmp_path, weights_dir, parts, on_log=lambda s, r: rows.append(r),
                      on_validate=lambda s, sc, m: validated.append(s))
    assert [row["phase"] for row in rows] == [phase_of(s, params.gan)
                                              for s in range(1, params.gan.steps + 1)]
    assert changed(g0, generator) and changed(d0, disc)
    assert all("d_real" in row and "d_loss" in row for row in rows)
    assert ("g_l1" in rows[0]) == (loss == "triad")
    assert summary["steps_run"] == params.gan.steps
    # G's EMA is validated after each step in which G learned (and at the end)
    learned = [s for s in range(1, params.gan.steps + 1) if "G" in phase_of(s, params.gan)]
    assert validated == learned
    assert "lpips" in summary["last"] and "lpips" in summary["raw_last"]


def test_alternate_schedule_and_frozen_networks(tmp_path, weights_dir):
    parts = tiny_setup(weights_dir)
    generator, disc, _, _, _, params = parts
    assert [phase_of(s, params.gan) for s in range(1, 5)] == ["G", "G", "D", "D"]
    d_start = params_of(disc)
    snapshots = []
    run_gan(tmp_path, weights_dir, parts,
            on_log=lambda s, r: snapshots.append((params_of(generator), params_of(disc))))
    (g1, d1), (g2, d2), (g3, d3), (g4, d4) = snapshots
    assert same(d2, d_start) and not same(g2, g1)  # D frozen in G's steps
    assert same(g4, g2) and not same(d4, d3)  # G frozen in D's steps


def test_pretrain_disc_learns_real_from_fake(tmp_path, weights_dir):
    generator, disc, _, data, _, params = tiny_setup(weights_dir)
    d0 = params_of(disc)
    rows = []
    summary = pretrain_disc(generator, disc, data, steps=2, batch_size=4, lr=1e-3,
                            betas=(0.9, 0.999), relativistic=False, train=params.train, seed=0,
                            device=CPU, precision="fp32", last_path=tmp_path / "d.pt", key="k",
                            on_log=lambda s, r: rows.append(r))
    assert changed(d0, disc) and summary["steps_run"] == 2 and len(rows) == 2
    assert {"d_loss", "d_accuracy", "d_real", "d_fake"} <= set(rows[-1])
    assert all(not p.requires_grad for p in generator.parameters())


def test_the_gan_phases_save_their_history_and_give_it_back_when_resumed(tmp_path,
                                                                         weights_dir):
    """pretrain_disc and train_gan keep what `history()` returns in their states (the stage's
    CSV text) and hand it to `on_start` when they resume, as train_cnn does."""
    def run(phase, parts, **hooks):
        generator, disc, _, data, _, params = parts
        if phase == "gan":
            return run_gan(tmp_path, weights_dir, parts, **hooks)
        return pretrain_disc(generator, disc, data, steps=2, batch_size=4, lr=1e-3,
                             betas=(0.9, 0.999), relativistic=False, train=params.train, seed=0,
                             device=CPU, precision="fp32", last_path=tmp_path / "last.pt",
                             key="k", **hooks)

    for phase in ("disc", "gan"):
        logged, started = [], []

        def on_log(step, row):
            logged.append(step)
            if step == 2:
                raise RuntimeError("killed")  # after the state of step 1

        with pytest.raises(RuntimeError):
            run(phase, tiny_setup(weights_dir), on_log=on_log, history=lambda: list(logged),
                on_start=lambda step, history: started.append((step, history)))
        run(phase, tiny_setup(weights_dir), on_start=lambda s, h: started.append((s, h)))
        assert started == [(0, None), (1, [1])], phase
        (tmp_path / "last.pt").unlink()


def test_nan_stops_the_gan_with_the_term_named(tmp_path, weights_dir):
    parts = tiny_setup(weights_dir)
    data = parts[3]
    data.images = [image.astype("float32") * float("nan") for image in data.images]
    with pytest.raises(SrcoreError, match=r"step 1: \w+ is nan"):
        run_gan(tmp_path, weights_dir, parts)


def test_a_discriminator_file_loads_and_other_files_are_named(tmp_path):
    from srcore.models.checkpoint import save_generator
    from srcore.models.discriminator import load_discriminator, save_discriminator

    disc = Discriminator(widths=(8, 8), hidden=(8, 8))
    save_discriminator(tmp_path / "disc.pt", disc, step=3)
    loaded = load_discriminator(tmp_path / "disc.pt")
    assert loaded.config == disc.config
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(),
                                                  disc.state_dict().values()))
    # models/cnn.pt copied over models/disc.pt: named, not a TypeError from the constructor
    save_generator(tmp_path / "cnn.pt", RRDBNet(rrdb=1, features=8, growth=8))
    with pytest.raises(SrcoreError, match=r"cnn.pt: a srcore-generator file, not a "
                                          r"discriminator; re-run .*pretrain_disc"):
        load_discriminator(tmp_path / "cnn.pt")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(SrcoreError, match="other.pt: not a discriminator saved by srcore"):
        load_discriminator(tmp_path / "other.pt")


def test_the_train_gan_line_says_which_loss_and_schedule_ran():
    from stages.train_gan import describe

    report = params_with(**{"gan__perceptual__layers": ["conv5_3"], "gan__perceptual__layer_weights": [1.0],
                            "gan__perceptual__activation": "post", "gan__perceptual__criterion": "l2"})
    line = describe(report.gan)
    assert line.startswith("alternate schedule (50 G then 50 D steps per round), dual loss: ")
    assert "1 x perceptual (vgg16 conv5_3 x 1, post-activation, L2)" in line
    assert "0.005 x adversarial" in line and "relativistic" not in line and "L1" not in line.split("L2")[-1]
    esrgan = params_with(gan__schedule="joint", gan__loss="triad", gan__relativistic=True).gan
    line = describe(esrgan)
    assert line.startswith("joint schedule (G and D on every batch), triad loss: ")
    assert "0.005 x relativistic adversarial" in line and line.endswith("0.01 x L1")
    assert "conv1_2 x 0.1, conv2_2 x 0.1, conv3_3 x 1" in line and "pre-activation, L1" in line
