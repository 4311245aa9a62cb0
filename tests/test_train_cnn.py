import pytest
import torch

from srcore.data.dataset import PatchDataset
from srcore.errors import SrcoreError
from srcore.models.checkpoint import load_checkpoint, load_generator
from srcore.models.rrdb import RRDBNet
from srcore.train.cnn import CnnConfig, make_val_images, train_cnn

from images import photo

CPU = torch.device("cpu")


def setup(tmp_path, epochs=2, lr=2e-3, **cfg):
    torch.manual_seed(0)
    model = RRDBNet(rrdb=1, features=8, growth=8, skip="none")
    data = PatchDataset([photo(64, 64, seed=i) for i in range(4)], patch_size=32,
                        patches_per_image=4, scale=4, kernel="bicubic", seed=0)
    val = make_val_images([photo(48, 48, seed=9)], 4, "bicubic")
    config = CnnConfig(epochs=epochs, batch_size=4, lr=lr, lr_halve_at=100, patience=100,
                       **cfg)
    kwargs = dict(device=CPU, precision="fp32", best_path=tmp_path / "cnn.pt",
                  last_path=tmp_path / "last.pt", fingerprint="f")
    return model, data, val, config, kwargs


def fixed_batch_loss(model, data):
    lr, hr = map(torch.stack, zip(*[data[i] for i in range(len(data))]))
    with torch.no_grad():
        return torch.nn.functional.l1_loss(model(lr), hr).item()


def test_tiny_training_lowers_the_loss_and_saves_the_best(tmp_path):
    model, data, val, cfg, kw = setup(tmp_path, epochs=3)
    before = fixed_batch_loss(model.eval(), data)
    summary = train_cnn(model, data, val, cfg, **kw)
    assert fixed_batch_loss(model.eval(), data) < 0.85 * before
    assert summary["epochs_run"] == 3 and len(summary["history"]) == 3
    best, ckpt = load_generator(tmp_path / "cnn.pt")
    assert ckpt["epoch"] == summary["best_epoch"] and ckpt["metrics"] == summary["best"]
    assert best.config == model.config


def test_resume_after_interruption_continues_and_matches(tmp_path):
    model, data, val, cfg, kw = setup(tmp_path / "a", epochs=4)
    train_cnn(model, data, val, cfg, **kw)
    uninterrupted = model.state_dict()

    model, data, val, cfg, kw = setup(tmp_path / "b", epochs=4)

    def stop_after_two(row):
        if row["epoch"] == 2:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train_cnn(model, data, val, cfg, on_epoch=stop_after_two, **kw)
    assert load_checkpoint(tmp_path / "b/last.pt")["epoch"] == 2
    seen = []
    model, data, val, cfg, kw = setup(tmp_path / "b", epochs=4)
    summary = train_cnn(model, data, val, cfg, on_epoch=lambda row: seen.append(row["epoch"]),
                        **kw)
    assert summary["resumed"] and seen == [3, 4]
    assert [row["epoch"] for row in summary["history"]] == [1, 2, 3, 4]
    for key, value in model.state_dict().items():
        assert torch.equal(value, uninterrupted[key]), key


def test_state_of_another_configuration_is_not_resumed(tmp_path):
    model, data, val, cfg, kw = setup(tmp_path)
    train_cnn(model, data, val, cfg, **kw)
    model, data, val, cfg, kw = setup(tmp_path)
    summary = train_cnn(model, data, val, cfg, **{**kw, "fingerprint": "other"})
    assert not summary["resumed"] and summary["epochs_run"] == 2


def test_early_stopping_and_l2(tmp_path):
    model, data, val, cfg, kw = setup(tmp_path, epochs=6, lr=1e-9, loss="l2")
    cfg.patience = 1
    summary = train_cnn(model, data, val, cfg, **kw)
    assert summary["stopped_early"] and summary["epochs_run"] < 6


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    model, data, val, cfg, kw = setup(tmp_path)
    data.images[0] = data.images[0].astype("float32") * float("nan")
    with pytest.raises(SrcoreError, match=r"epoch 1: the l1 loss is nan"):
        train_cnn(model, data, val, cfg, **kw)


def test_patience_shorter_than_the_validation_interval_waits_for_a_validation(tmp_path):
    model, data, val, cfg, kw = setup(tmp_path, epochs=4, val_every=3)
    cfg.patience = 1
    summary = train_cnn(model, data, val, cfg, **kw)
    assert summary["best_epoch"] >= 3 and summary["epochs_run"] >= 3
    assert load_generator(tmp_path / "cnn.pt")[1]["epoch"] == summary["best_epoch"]
