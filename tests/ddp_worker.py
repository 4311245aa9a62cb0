"""A tiny training phase as one process, or as one of several under torchrun.

    python tests/ddp_worker.py PHASE OUT STEPS WEIGHTS
    python -m torch.distributed.run --standalone --nproc-per-node=2 tests/ddp_worker.py ...

PHASE: cnn, gan-alternate or gan-joint (the GAN ones pretrain D for two steps first); or
relativistic-losses: the relativistic D and G losses on this process's share of fixed logits,
saved with their gradients to OUT/rank<R>.pt. Each
process saves its networks' final parameters to OUT/rank<R>.pt and the rows its on_log hook
received to OUT/rank<R>.json; the phases' own outputs (checkpoints, states) go to OUT too.
"""

import json
import sys
from pathlib import Path

import torch

from srcore.data.dataset import PatchDataset
from srcore.losses import PerceptualLoss
from srcore.models.discriminator import Discriminator
from srcore.models.rrdb import RRDBNet
from srcore.pretrained import load_features, load_lpips
from srcore.train import distributed
from srcore.train.cnn import train_cnn
from srcore.train.gan import pretrain_disc, train_gan
from srcore.train.validate import make_val_images

sys.path.insert(0, str(Path(__file__).parent))
from conftest import params_with  # noqa: E402
from images import photo  # noqa: E402

BATCH = 8  # global; 4 images x 4 crops = 16 crops = 2 steps per pass


def main(phase: str, out: Path, steps: int, weights: Path) -> None:
    dist, device = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)
    if phase == "relativistic-losses":
        relativistic_losses(dist, out)
        return
    data = PatchDataset([photo(64, 64, seed=i) for i in range(4)], patch_size=32,
                        patches_per_image=4, scale=4, kernel="bicubic", seed=0)
    val = make_val_images([photo(48, 48, seed=9)], 4, "bicubic")
    params = params_with(cnn__steps=steps, cnn__batch_size=BATCH, cnn__lr=1e-3,
                         cnn__lr_halve_at=[], cnn__val_every=1, cnn__patience=steps,
                         cnn__early_stop_warmup=0, gan__batch_size=BATCH, gan__rounds=1,
                         gan__g_steps=steps, gan__d_steps=steps, gan__lr=1e-3, disc__lr=1e-3,
                         gan__val_every=1, disc__pretrain_steps=2, train__log_every=1,
                         train__checkpoint_every=1)
    rows: list[dict] = []
    common = dict(seed=0, device=device, precision="fp32", key="k",
                  on_log=lambda step, row: rows.append({"step": step, **row}), dist=dist)
    if phase == "cnn":
        model = RRDBNet(rrdb=1, features=8, growth=8, skip="none")
        train_cnn(model, data, val, params.cnn, params.train, crop_border=4,
                  best_path=out / "cnn.pt", last_path=out / "last.pt", **common)
        nets = {"model": model}
    else:
        generator = RRDBNet(rrdb=1, features=8, growth=8)
        disc = Discriminator(widths=(8, 16, 16, 16), hidden=(16, 8))
        pretrain_disc(generator, disc, data, steps=2, batch_size=BATCH, lr=1e-3,
                      betas=(0.9, 0.999), relativistic=False, train=params.train,
                      last_path=out / "disc_last.pt", **common)
        perceptual = PerceptualLoss(load_features(weights, "vgg16"), ["conv2_2"], [1.0], "post", "l2")
        gan = params.gan.model_copy(update={"schedule": phase.split("-")[1]})
        train_gan(generator, disc, perceptual, data, val, load_lpips(weights), gan, params.train,
                  disc_lr=1e-3, crop_border=4, last_path=out / "gan_last.pt", **common)
        nets = {"generator": generator, "discriminator": disc}
    torch.save({name: net.state_dict() for name, net in nets.items()},
               out / f"rank{dist.rank}.pt")
    (out / f"rank{dist.rank}.json").write_text(json.dumps(rows))
    distributed.teardown()


def relativistic_losses(dist, out: Path) -> None:
    """Each process takes its share of one global batch of logits, as DDP's processes do."""
    from functools import partial

    from srcore.losses import discriminator_loss, generator_adversarial

    logits = torch.randn(2, 8, generator=torch.Generator().manual_seed(1)) * 3
    logits[0] += 2  # real above fake: the batch means matter
    share = 8 // dist.world
    real, fake = (row[dist.rank * share:(dist.rank + 1) * share].clone().requires_grad_()
                  for row in logits)
    mean = partial(distributed.global_mean, dist=dist)
    result = {}
    for name, loss in (("d", discriminator_loss(real, fake, True, mean)),
                       ("g", generator_adversarial(fake, real, True, mean))):
        real.grad = fake.grad = None
        loss.backward()
        # DDP averages the processes' gradients: each process's share of the 1-process one
        result[name] = {"loss": loss.detach(), "real": real.grad / dist.world,
                        "fake": fake.grad / dist.world}
    torch.save(result, out / f"rank{dist.rank}.pt")
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
