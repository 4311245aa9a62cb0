"""The CUDA-only paths: training steps replayed from CUDA graphs give the eager numbers.

These need a GPU, so they are skipped (with the reason, in pytest's summary) where there is
none; docs/performance.md says when they last ran on one. Everything else about the graphs
(their switch and its refusals) is tested on the CPU in test_training_setup.py.
"""

import pytest
import torch

from srcore.train import cuda_graphs
from srcore.train.cnn import train_cnn
from srcore.train.gan import pretrain_disc, train_gan
from srcore.data.dataset import PatchDataset
from srcore.train.validate import make_val_images
from conftest import params_with, run_cli, write_params, write_training_data
from images import photo
from test_train_cnn import setup

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (the CUDA graph paths)")
CUDA = torch.device("cuda")
TINY_RUN = {"model__rrdb": 1, "model__features": 8, "model__growth": 8, "data__patch_size": 32,
            "data__patches_per_image": 4, "cnn__batch_size": 4, "cnn__steps": 8,
            "cnn__val_every": 4, "cnn__patience": 8, "cnn__early_stop_warmup": 4,
            "cnn__lr_halve_at": [], "train__log_every": 2, "train__checkpoint_every": 4}


@pytest.fixture
def captures(monkeypatch):
    """How many times a step was captured, over all GraphedSteps made in the test."""
    count = {"n": 0}
    original = cuda_graphs.GraphedSteps._capture

    def counted(self, *args):
        count["n"] += 1
        return original(self, *args)

    monkeypatch.setattr(cuda_graphs.GraphedSteps, "_capture", counted)
    return count


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_graphed_cnn_training_gives_the_eager_numbers(tmp_path, captures, precision):
    """12 steps, the lr halved at step 6: captured at step 4 (after 3 eager ones), and again
    at step 7 for the new lr."""
    rows, models = {}, {}
    for graphs in (False, True):
        folder = tmp_path / str(graphs)
        folder.mkdir()
        model, data, val, cnn, train, kw = setup(folder, steps=12,
                                                 train__cuda_graphs=graphs)
        kw.update(device=CUDA, precision=precision)
        rows[graphs] = []
        train_cnn(model, data, val, cnn, train, **kw,
                  on_log=lambda step, row, out=rows[graphs]: out.append(row["train_loss"]))
        models[graphs] = model
    assert captures["n"] == 2
    assert len(rows[True]) == 12 and rows[True] == pytest.approx(rows[False], rel=1e-4)
    for a, b in zip(models[True].parameters(), models[False].parameters()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def random_nets():
    """The GAN's networks at test size; VGG and LPIPS with random weights (the real ones come
    from the internet or a cache, which a GPU machine may lack; equality needs no real ones)."""
    import lpips

    from srcore.losses import PerceptualLoss
    from srcore.models.discriminator import Discriminator
    from srcore.models.rrdb import RRDBNet
    from srcore.pretrained import empty_features

    torch.manual_seed(0)
    features = empty_features("vgg16").to_empty(device="cpu")
    for param in features.parameters():
        torch.nn.init.normal_(param, std=0.02)
    return (RRDBNet(rrdb=1, features=8, growth=8), Discriminator((8, 16, 16, 16), (16, 8)),
            PerceptualLoss(features, ["conv2_2"], [1.0], "post", "l2"),
            lpips.LPIPS(net="alex", pretrained=False, pnet_rand=True, verbose=False).eval())


def test_graphed_gan_phases_give_the_eager_numbers(tmp_path, captures):
    """Discriminator pretraining, then two rounds of 5 G and 5 D steps: each phase is captured
    once, after its own eager warm-up."""
    logged = {}
    for graphs in (False, True):
        folder = tmp_path / str(graphs)
        folder.mkdir()
        generator, disc, perceptual, lpips_model = random_nets()
        data = PatchDataset([photo(64, 64, seed=i) for i in range(2)], patch_size=32,
                            patches_per_image=4, scale=4, kernel="bicubic", seed=0)
        val = make_val_images([photo(48, 48, seed=9)], 4, "bicubic")
        params = params_with(train__cuda_graphs=graphs, gan__rounds=2, gan__g_steps=5,
                             gan__d_steps=5, gan__batch_size=4, gan__val_every=5,
                             train__log_every=1, train__checkpoint_every=5)
        rows = logged[graphs] = []
        pretrain_disc(generator, disc, data, steps=6, batch_size=4, lr=1e-3, betas=(0.9, 0.99),
                      relativistic=False, train=params.train, seed=0, device=CUDA,
                      precision="fp32", last_path=folder / "disc_last.pt", key="k",
                      on_log=lambda step, row: rows.append(row["d_loss"]))
        train_gan(generator, disc, perceptual, data, val, lpips_model, params.gan,
                  params.train, disc_lr=1e-3, seed=0, crop_border=4, device=CUDA,
                  precision="fp32", last_path=folder / "gan_last.pt", key="k",
                  on_log=lambda step, row: rows.append(row.get("g_total", row["d_loss"])))
    assert captures["n"] == 3  # pretraining's D step, the GAN's G and D phases
    assert len(logged[True]) == 6 + 20
    assert logged[True] == pytest.approx(logged[False], rel=1e-4)


def test_the_training_stage_says_it_uses_cuda_graphs(project):
    write_training_data(project, train=2)
    write_params(project, train__device="cuda", **TINY_RUN)
    out = run_cli("train-cnn", cwd=project)
    assert "CUDA graphs" in out.stdout.splitlines()[0], out.stdout
    assert (project / "models/cnn.pt").is_file()
