import os
import signal

import numpy as np
import pytest
import torch

from srcore.data.dataset import PatchDataset
from srcore.errors import Interrupted, SrcoreError
from srcore.figures import center_crop, sample_grid
from srcore.metrics import psnr_ssim
from srcore.models.checkpoint import load_checkpoint, load_generator
from srcore.models.rrdb import RRDBNet
from srcore.train.cnn import train_cnn
from srcore.train.ema import Ema
from srcore.train.validate import make_val_images

from conftest import params_with
from images import photo

CPU = torch.device("cpu")


def setup(tmp_path, steps=8, lr=2e-3, **overrides):
    """A tiny RRDBNet, 16 crops of 4 photos, batch 4; every cadence is a step count."""
    torch.manual_seed(0)
    model = RRDBNet(rrdb=1, features=8, growth=8, skip="none")
    data = PatchDataset([photo(64, 64, seed=i) for i in range(4)], patch_size=32,
                        patches_per_image=4, scale=4, kernel="bicubic", seed=0)
    val = make_val_images([photo(48, 48, seed=9)], 4, "bicubic")
    settings = {"cnn__steps": steps, "cnn__batch_size": 4, "cnn__lr": lr,
                "cnn__lr_halve_at": [steps // 2], "cnn__val_every": 2, "cnn__patience": steps,
                "cnn__early_stop_warmup": 0, "train__log_every": 1,
                "train__checkpoint_every": 2, "disc__pretrain_steps": steps,
                "gan__g_steps": steps, "gan__val_every": 1, **overrides}
    params = params_with(**settings)
    kwargs = dict(seed=0, crop_border=4, device=CPU, precision="fp32",
                  best_path=tmp_path / "cnn.pt", last_path=tmp_path / "last.pt", key="k")
    return model, data, val, params.cnn, params.train, kwargs


def fixed_batch_loss(model, data):
    lq, gt = map(torch.stack, zip(*[data[(0, i)] for i in range(len(data))]))
    with torch.no_grad():
        return torch.nn.functional.l1_loss(model(lq), gt).item()


def test_tiny_training_lowers_the_loss_and_saves_the_best_ema_weights(tmp_path):
    model, data, val, cnn, train, kw = setup(tmp_path, steps=12)
    before = fixed_batch_loss(model.eval(), data)
    rows, scores, emas = [], [], {}

    def validated(step, score, ema_model):
        scores.append(step)
        emas[step] = {k: v.clone() for k, v in ema_model.state_dict().items()}

    summary = train_cnn(model, data, val, cnn, train, on_log=lambda s, r: rows.append((s, r)),
                        on_validate=validated, **kw)
    assert fixed_batch_loss(model.eval(), data) < 0.85 * before
    assert summary["steps_run"] == 12 and [s for s, _ in rows] == list(range(1, 13))
    assert scores == [2, 4, 6, 8, 10, 12]
    assert rows[5][1]["lr"] == cnn.lr and rows[6][1]["lr"] == cnn.lr / 2  # halved after step 6
    best, ckpt = load_generator(tmp_path / "cnn.pt")
    assert ckpt["step"] == summary["best_step"] and ckpt["metrics"] == summary["best"]
    state = load_checkpoint(tmp_path / "last.pt")
    ema = state["objects"]["ema"]
    assert ema["updates"] == 12
    # the saved model is the EMA validated at the best step, not the raw weights
    assert all(torch.equal(best.state_dict()[k], v) for k, v in emas[ckpt["step"]].items())
    assert all(torch.equal(emas[12][k], v) for k, v in ema["weights"].items())
    assert any(not torch.equal(model.state_dict()[k], v) for k, v in ema["weights"].items())
    assert summary["raw_last"]["psnr_y"] > 0


def test_the_sample_grid_shows_the_output_its_validation_scored(tmp_path):
    model, data, val, cnn, train, kw = setup(tmp_path, steps=4)
    checked = []

    def validated(step, scores, ema_model):
        sr = val[0].sr  # the only val image: its scores are the validation's
        assert psnr_ssim(val[0].gt, sr, 4) == {k: scores[k] for k in ("psnr", "ssim", "psnr_y",
                                                                      "ssim_y")}
        side = center_crop(sr, 128).shape[0]
        x = 2 * (side + 4)  # the third panel, under its 22-pixel label band
        assert np.array_equal(sample_grid(val[0], 4)[22:22 + side, x:x + side],
                              center_crop(sr, 128))
        checked.append(step)

    train_cnn(model, data, val, cnn, train, on_validate=validated, **kw)
    assert checked == [2, 4]


def test_validation_keeps_few_outputs_waiting_to_be_scored(monkeypatch):
    """On a GPU the upscaling outruns the scoring threads: the outputs waiting for them are
    bounded (DIV2K at 2040 pixels: 8 MB each), not every val image's, and the scores stay."""
    import srcore.train.validate as validation

    torch.manual_seed(0)
    model = RRDBNet(rrdb=1, features=8, growth=8, skip="none")
    val = make_val_images([photo(48, 48, seed=i) for i in range(8)], 4, "bicubic")
    monkeypatch.setattr(validation, "usable_cpus", lambda: 2)
    expected = validation.validate(model, val, CPU, "fp32", 4)
    waiting, most = [0], [0]

    class Future:  # scored when its result is asked for, as if the threads were slow
        def __init__(self, fn, args):
            self.fn, self.args = fn, args
            waiting[0] += 1
            most[0] = max(most[0], waiting[0])

        def result(self):
            waiting[0] -= 1
            return self.fn(*self.args)

    class SlowPool:
        def __init__(self, threads):
            assert threads == 2

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return None

        def submit(self, fn, *args):
            return Future(fn, args)

    monkeypatch.setattr(validation, "ThreadPoolExecutor", SlowPool)
    assert validation.validate(model, val, CPU, "fp32", 4) == expected
    assert most[0] == 3  # one per thread and one more (before: all 8)


def test_validation_tiles_an_image_whose_whole_pass_would_not_fit_on_the_gpu(monkeypatch):
    """Where auto_tile finds the whole pass too big for free GPU memory, the val image is
    upscaled in its tiles (as upscale and evaluate do) rather than running out of memory; the
    output is the whole pass's to within one 8-bit level. The GPU's memory is stood in for:
    probes_memory and auto_tile answer as they would on a small card."""
    import srcore.train.validate as validation

    torch.manual_seed(0)
    model = RRDBNet(rrdb=1, features=8, growth=8, skip="bicubic")
    model.conv_last.reset_parameters()  # zero at init: the output would be bicubic alone
    val = make_val_images([photo(200, 264, seed=3)], 4, "bicubic")
    whole_scores = validation.validate(model, val, CPU, "fp32", 4)
    whole = val[0].sr
    tiles_used = []
    real_upscale_array = validation.upscale_array
    monkeypatch.setattr(validation, "upscale_array",
                        lambda m, img, tile, **kw: tiles_used.append(tile) or
                        real_upscale_array(m, img, tile, **kw))
    monkeypatch.setattr(validation, "probes_memory", lambda m, device: True)
    monkeypatch.setattr(validation, "auto_tile", lambda m, h, w, **kw: 0)  # it fits
    assert validation.validate(model, val, CPU, "fp32", 4) == whole_scores
    assert tiles_used == []
    monkeypatch.setattr(validation, "auto_tile", lambda m, h, w, **kw: 32)  # it does not
    tiled_scores = validation.validate(model, val, CPU, "fp32", 4)
    assert tiles_used == [32]
    tiled = val[0].sr
    assert tiled.shape == whole.shape == (200, 264, 3)
    assert np.abs(tiled.astype(int) - whole.astype(int)).max() <= 1
    assert abs(tiled_scores["psnr_y"] - whole_scores["psnr_y"]) < 0.01


def test_ema_warms_up_then_follows_the_decay():
    model = torch.nn.Linear(2, 1, bias=False)
    torch.nn.init.zeros_(model.weight)
    ema = Ema(model, decay=0.999)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay min(0.999, 2 / 11)
    assert ema.model.weight[0, 0].item() == pytest.approx(1 - 2 / 11)
    ema.updates = 100_000
    assert ema.current_decay() == 0.999


def run_interrupted(tmp_path, stop_at, how):
    """Train 8 steps, stopped at step `stop_at` by `how`; then the same run again (resumes)."""
    model, data, val, cnn, train, kw = setup(tmp_path)

    def on_log(step, row):
        if step == stop_at:
            if how == "crash":
                raise RuntimeError("killed")
            os.kill(os.getpid(), signal.SIGINT)  # as Ctrl-C: the loop stops after this step

    expected = Interrupted if how == "sigint" else RuntimeError
    with pytest.raises(expected):
        train_cnn(model, data, val, cnn, train, on_log=on_log, **kw)
    saved = load_checkpoint(tmp_path / "last.pt")["step"]
    model, data, val, cnn, train, kw = setup(tmp_path)
    rows = []
    summary = train_cnn(model, data, val, cnn, train, on_log=lambda s, r: rows.append((s, r)),
                        **kw)
    return saved, rows, summary, model


def test_resumed_runs_end_bit_identical_to_an_uninterrupted_one(tmp_path):
    model, data, val, cnn, train, kw = setup(tmp_path / "straight")
    straight_rows = []
    train_cnn(model, data, val, cnn, train, on_log=lambda s, r: straight_rows.append((s, r)), **kw)
    straight = model.state_dict()
    straight_ema = load_checkpoint(tmp_path / "straight/last.pt")["objects"]["ema"]["weights"]
    for how, stop_at, saved_at in (("crash", 5, 4), ("sigint", 5, 5)):
        saved, rows, summary, model = run_interrupted(tmp_path / how, stop_at, how)
        assert saved == saved_at  # a crash loses what followed the last checkpoint, SIGINT not
        assert summary["resumed"] and [s for s, _ in rows] == list(range(saved + 1, 9))
        assert rows == straight_rows[saved:]  # the same losses, read from the same window sums
        for key, value in model.state_dict().items():
            assert torch.equal(value, straight[key]), (how, key)
        ema = load_checkpoint(tmp_path / how / "last.pt")["objects"]["ema"]["weights"]
        assert all(torch.equal(ema[k], v) for k, v in straight_ema.items())


def test_a_resumed_run_writes_its_log_from_its_state_not_from_the_file_it_finds(tmp_path):
    """Interrupted, then another run's log put in place (`git checkout .`, `dvc exp apply`):
    the resumed run's log is an uninterrupted run's, not the other run's rows up to the saved
    step followed by its own. A caller that keeps no history (history() None) resumes with
    its file's own rows up to the saved step."""
    from srcore.csvlog import CsvLog

    columns = ["step", "train_loss", "lr"]

    def logged(folder, stop_at=None, keep=True):
        log = CsvLog(folder / "train.csv", columns)

        def on_log(step, row):
            log.append({"step": step, **row})
            if step == stop_at:
                os.kill(os.getpid(), signal.SIGINT)  # the loop saves after this step, stops

        return log, dict(on_start=lambda step, saved: log.start(step, saved and saved["train"]),
                         history=lambda: {"train": log.text()} if keep else None,
                         on_log=on_log)

    model, data, val, cnn, train, kw = setup(tmp_path / "straight")
    log, hooks = logged(tmp_path / "straight")
    train_cnn(model, data, val, cnn, train, **kw, **hooks)
    straight = log.path.read_text()
    other = straight.replace(",0.002\n", ",0.01\n")  # another run's log: another lr
    assert other != straight
    for keep in (True, False):
        folder = tmp_path / f"keep_{keep}"
        model, data, val, cnn, train, kw = setup(folder)
        log, hooks = logged(folder, stop_at=5, keep=keep)
        with pytest.raises(Interrupted):
            train_cnn(model, data, val, cnn, train, **kw, **hooks)
        saved = load_checkpoint(folder / "last.pt")
        assert saved["step"] == 5
        assert saved["history"] == ({"train": log.path.read_text()} if keep else None)
        if keep:
            log.path.write_text(other)  # else its own file is all it can resume with
        model, data, val, cnn, train, kw = setup(folder)
        log, hooks = logged(folder, keep=keep)
        assert train_cnn(model, data, val, cnn, train, **kw, **hooks)["resumed"]
        assert log.path.read_text() == straight, keep


def test_the_wall_time_counts_the_run_before_a_resume_and_stays_with_a_finished_state(
        tmp_path):
    import time

    model, data, val, cnn, train, kw = setup(tmp_path)

    def slow_then_crash(step, row):
        time.sleep(0.5)  # steps 1-4 (saved at 4) take 2 s at least
        if step == 5:
            raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        train_cnn(model, data, val, cnn, train, on_log=slow_then_crash, **kw)
    assert load_checkpoint(tmp_path / "last.pt")["seconds"] >= 2.0
    model, data, val, cnn, train, kw = setup(tmp_path)
    resumed = train_cnn(model, data, val, cnn, train, **kw)  # steps 5-8, quick
    assert resumed["wall_time_s"] >= 2.0 and resumed["steps_run"] == 8
    model, data, val, cnn, train, kw = setup(tmp_path)
    again = train_cnn(model, data, val, cnn, train, **kw)  # finished: restores the best weights
    assert again["wall_time_s"] == load_checkpoint(tmp_path / "last.pt")["seconds"] >= 2.0


def test_the_state_is_written_at_the_checkpoint_cadence(tmp_path, monkeypatch):
    import srcore.train.cnn as cnn_module

    saves = []
    real = cnn_module.save_state
    monkeypatch.setattr(cnn_module, "save_state",
                        lambda path, key, objects, state: (saves.append(state["step"]),
                                                           real(path, key, objects, state)))
    model, data, val, cnn, train, kw = setup(tmp_path, steps=9, train__checkpoint_every=4)
    train_cnn(model, data, val, cnn, train, **kw)
    assert saves == [4, 8, 9]


def test_a_stop_request_under_torchrun_waits_for_the_main_process_to_save(tmp_path, monkeypatch):
    """A signal to one process stops all at the next logging step. A process that exited
    before the main one had saved would make torchrun signal the main one again, mid-save
    (seen with 2 CPU processes: the state of the step before was kept): each waits for it."""
    from srcore.train import distributed, loop
    from srcore.train.distributed import Dist

    events = []
    monkeypatch.setattr(distributed, "sum_over_ranks", lambda values, dist: values)
    monkeypatch.setattr(distributed, "any_rank", lambda flag, dist, device: True)
    monkeypatch.setattr(distributed, "barrier", lambda dist: events.append("barrier"))
    batches = iter(lambda: None, 0)
    for rank in (0, 1):
        events.clear()
        hooks = loop.Hooks(loop.new_state(None), save=lambda: events.append("save"))
        with pytest.raises(Interrupted, match="state saved at step 1"):
            loop.run(loop.Cadence(steps=4, log_every=1, checkpoint_every=4), batches,
                     lambda step, batch: {"loss": torch.tensor(1.0)}, hooks, desc="t",
                     last_path=tmp_path / "last.pt", remedy="", device=CPU,
                     dist=Dist(rank=rank, world=2))
        assert events == (["save", "barrier"] if rank == 0 else ["barrier"])


def test_the_saved_log_window_is_the_mean_of_the_processes_windows(tmp_path, monkeypatch):
    """Every process resumes from the one saved state: a log window cut by a checkpoint is saved
    as the mean over processes of their running sums, so that summed again over the processes
    after the resume it gives what an uninterrupted run logs (not the main process's sum twice)."""
    from srcore.train import distributed, loop
    from srcore.train.distributed import Dist

    # the other process's losses are 3 times this one's: the sums over both are 4 times
    monkeypatch.setattr(distributed, "sum_over_ranks", lambda values, dist: values * 4)
    monkeypatch.setattr(distributed, "any_rank", lambda flag, dist, device: flag)
    saved = []
    hooks = loop.Hooks(loop.new_state(None),
                       save=lambda: saved.append(dict(hooks.state["window"])))
    loop.run(loop.Cadence(steps=3, log_every=4, checkpoint_every=2), iter(lambda: None, 0),
             lambda step, batch: {"loss": torch.tensor(float(step))}, hooks, desc="t",
             last_path=tmp_path / "last.pt", remedy="", device=CPU, dist=Dist(rank=0, world=2))
    total, count = saved[0]["loss"]  # at step 2: 1 + 2 here, 3 + 6 on the other process
    assert count == 2 and total.item() == (1 + 2) * 4 / 2


def test_ctrl_c_again_stops_at_once_a_sigterm_is_always_the_same_request():
    """A scheduler's SIGTERM to every process reaches torchrun too, which passes on a SIGINT to
    the training processes; one `kill` of DVC can bring the stage two parent-death SIGTERMs:
    neither may cut short the save the first signal asked for. A second Ctrl-C does."""
    from srcore.train.loop import _stop_requests

    with _stop_requests(quiet=True) as requested:
        signal.raise_signal(signal.SIGTERM)
        assert requested.is_set() and requested.signum == signal.SIGTERM
        signal.raise_signal(signal.SIGINT)  # ignored: the stop is already asked for
        signal.raise_signal(signal.SIGTERM)  # the same
        assert requested.is_set()
    with _stop_requests(quiet=True) as requested:
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGTERM)  # ignored
        with pytest.raises(Interrupted, match="stopped before the state was saved"):
            signal.raise_signal(signal.SIGINT)


def test_state_of_another_configuration_is_not_resumed(tmp_path):
    model, data, val, cnn, train, kw = setup(tmp_path)
    train_cnn(model, data, val, cnn, train, **kw)
    model, data, val, cnn, train, kw = setup(tmp_path)
    summary = train_cnn(model, data, val, cnn, train, **{**kw, "key": "other"})
    assert not summary["resumed"] and summary["steps_run"] == 8


def test_a_net_at_bicubic_is_not_stopped_before_the_warmup(tmp_path):
    """lr 1e-9: the val score never moves. Early stopping waits for the warm-up, and its
    patience counts from the end of the warm-up, not from the first validation."""
    model, data, val, cnn, train, kw = setup(tmp_path, steps=16, lr=1e-9, cnn__patience=4,
                                             cnn__early_stop_warmup=8)
    validated = []
    summary = train_cnn(model, data, val, cnn, train,
                        on_validate=lambda s, sc, m: validated.append(s), **kw)
    assert summary["stopped_early"] and summary["steps_run"] == 12
    assert validated == [2, 4, 6, 8, 10, 12] and summary["best_step"] == 2
    assert load_generator(tmp_path / "cnn.pt")[1]["step"] == 2


def test_patience_shorter_than_the_validation_interval_waits_for_a_validation(tmp_path):
    model, data, val, cnn, train, kw = setup(tmp_path, steps=8, cnn__val_every=3,
                                             cnn__patience=1)
    summary = train_cnn(model, data, val, cnn, train, **kw)
    assert summary["best_step"] >= 3 and summary["steps_run"] >= 3


def test_nan_loss_stops_with_a_clear_error(tmp_path):
    model, data, val, cnn, train, kw = setup(tmp_path, train__log_every=2)
    data.images = [image.astype("float32") * float("nan") for image in data.images]
    with pytest.raises(SrcoreError, match=r"steps 1-2: train_loss is nan; training stopped and "
                                          r"no state was saved yet"):
        train_cnn(model, data, val, cnn, train, **kw)


def test_losses_are_logged_at_the_cadence_as_means_of_their_window(tmp_path):
    per_step, windows = [], []
    for log_every, rows in ((1, per_step), (3, windows)):
        model, data, val, cnn, train, kw = setup(tmp_path / str(log_every),
                                                 train__log_every=log_every)
        train_cnn(model, data, val, cnn, train, on_log=lambda s, r: rows.append((s, r)), **kw)
    assert [s for s, _ in windows] == [3, 6, 8]  # and the last step, whatever the cadence
    losses = [r["train_loss"] for _, r in per_step]
    for (step, row), low in zip(windows, (0, 3, 6)):
        assert row["train_loss"] == pytest.approx(sum(losses[low:step]) / (step - low), rel=1e-5)


def test_a_truncated_state_says_how_to_start_over(tmp_path):
    model, data, val, cnn, train, kw = setup(tmp_path)
    train_cnn(model, data, val, cnn, train, **kw)
    last = tmp_path / "last.pt"
    last.write_bytes(last.read_bytes()[:1000])  # cut short, e.g. copied from a full disk
    model, data, val, cnn, train, kw = setup(tmp_path)
    with pytest.raises(SrcoreError) as caught:
        train_cnn(model, data, val, cnn, train, **kw)
    message = str(caught.value)
    assert str(last) in message and "resumable training state" in message
    assert f"delete it (rm {last}) to start this training over" in message
