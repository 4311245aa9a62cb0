"""A tiny training phase as one process, or as one of several under torchrun.

    python tests/ddp_worker.py PHASE OUT EPOCHS WEIGHTS
    python -m torch.distributed.run --standalone --nproc-per-node=2 tests/ddp_worker.py ...

PHASE: cnn, gan-alternate or gan-joint (the GAN ones pretrain D for one epoch first). Each
process saves its networks' final parameters to OUT/rank<R>.pt and the rows its on_epoch hook
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
from srcore.train.cnn import CnnConfig, make_val_images, train_cnn
from srcore.train.gan import GanConfig, pretrain_disc, train_gan

sys.path.insert(0, str(Path(__file__).parent))
from images import photo  # noqa: E402

BATCH = 8  # global; 4 images x 4 crops = 16 crops = 2 steps per epoch


def main(phase: str, out: Path, epochs: int, weights: Path) -> None:
    dist, device = distributed.setup(torch.device("cpu"))
    torch.manual_seed(0)
    data = PatchDataset([photo(64, 64, seed=i) for i in range(4)], patch_size=32,
                        patches_per_image=4, scale=4, kernel="bicubic", seed=0)
    val = make_val_images([photo(48, 48, seed=9)], 4, "bicubic")
    rows: list[dict] = []
    common = dict(device=device, precision="fp32", fingerprint="f", on_epoch=rows.append,
                  dist=dist)
    if phase == "cnn":
        model = RRDBNet(rrdb=1, features=8, growth=8, skip="none")
        cfg = CnnConfig(epochs=epochs, batch_size=BATCH, lr=1e-3, lr_halve_at=100, patience=100)
        train_cnn(model, data, val, cfg, best_path=out / "cnn.pt", last_path=out / "last.pt",
                  **common)
        nets = {"model": model}
    else:
        generator = RRDBNet(rrdb=1, features=8, growth=8)
        disc = Discriminator(widths=(8, 16, 16, 16), hidden=(16, 8))
        pretrain_disc(generator, disc, data, epochs=1, batch_size=BATCH, lr=1e-3,
                      betas=(0.9, 0.999), relativistic=False, seed=0, num_workers=0,
                      last_path=out / "disc_last.pt", **common)
        perceptual = PerceptualLoss(load_features(weights, "vgg16"), "conv2_2", "post")
        cfg = GanConfig(schedule=phase.split("-")[1], rounds=1, epochs_per_round=epochs,
                        batch_size=BATCH, lr=1e-3, disc_lr=1e-3, val_every=1)
        train_gan(generator, disc, perceptual, data, val, load_lpips(weights), cfg,
                  last_path=out / "gan_last.pt", **common)
        nets = {"generator": generator, "discriminator": disc}
    torch.save({name: net.state_dict() for name, net in nets.items()},
               out / f"rank{dist.rank}.pt")
    (out / f"rank{dist.rank}.json").write_text(json.dumps(rows))
    distributed.teardown()


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), Path(sys.argv[4]))
