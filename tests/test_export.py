"""`srcore export` to ONNX, and `upscale --model x.onnx` through onnxruntime."""

import builtins
import re
import shutil

import cv2
import numpy as np
import pytest
import torch

from conftest import run_cli, run_cli_patched
from images import photo
from srcore.errors import SrcoreError
from srcore.models.checkpoint import save_generator
from srcore.models.discriminator import Discriminator
from srcore.models.rrdb import RRDBNet
from srcore.onnx_model import INSTALL
from srcore.upscale import run


def tiny(skip="bicubic"):
    torch.manual_seed(0)
    model = RRDBNet(rrdb=1, features=8, growth=8, skip=skip).eval()
    model.conv_last.reset_parameters()  # zero at init (exactly bicubic): make the net count
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """cnn.pt and, written by the command a user runs, cnn.onnx and cnn.fp16.onnx (made once
    for the module: the tests only read them)."""
    folder = tmp_path_factory.mktemp("export")
    save_generator(folder / "cnn.pt", tiny())
    result = run_cli("export", "cnn.pt", "-o", "cnn.onnx", "--fp16", cwd=folder)
    return result, folder


@pytest.fixture
def ckpt(tmp_path, exported):
    """A folder of its own with cnn.pt, cnn.onnx and cnn.fp16.onnx; the path of cnn.pt."""
    for name in ("cnn.pt", "cnn.onnx", "cnn.fp16.onnx"):
        shutil.copy(exported[1] / name, tmp_path / name)
    return tmp_path / "cnn.pt"


def test_export_checks_itself_and_matches_torch_at_odd_sizes_and_batch_2(exported):
    import onnx
    import onnxruntime as ort

    result, folder = exported
    onnx_path = folder / "cnn.onnx"
    reported = [float(d) for d in re.findall(r"max abs difference (\S+) on", result.stdout)]
    assert len(reported) == 2 and reported[0] <= 1e-3, result.stdout
    assert "cnn.fp16.onnx (fp16" in result.stdout
    proto = onnx.load(str(onnx_path))
    assert max(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx")) >= 17
    assert sorted(p.name for p in folder.iterdir()) == ["cnn.fp16.onnx", "cnn.onnx", "cnn.pt"]

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    model = tiny()
    for shape in [(2, 3, 17, 23), (1, 3, 9, 40)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = model(x).numpy()
        got = session.run(None, {"input": x.numpy()})[0]
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-3


def test_export_reads_basicsr_files(tmp_path):
    torch.save({"params_ema": tiny(skip="none").state_dict()}, tmp_path / "esrgan.pth")
    result = run_cli("export", "esrgan.pth", "-o", "esrgan.onnx", cwd=tmp_path)
    assert "wrote esrgan.onnx (fp32, opset 17)" in result.stdout
    assert (tmp_path / "esrgan.onnx").stat().st_size > 0


def read(path):
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.mark.parametrize("tile", ["0", "32"])
def test_upscale_with_the_onnx_file_gives_the_pixels_of_the_checkpoint(tmp_path, ckpt,
                                                                       tile):
    cv2.imwrite(str(tmp_path / "a.png"), photo(45, 70))  # two tiles of 32 in each direction
    cv2.imwrite(str(tmp_path / "g.png"), cv2.cvtColor(photo(21, 19), cv2.COLOR_BGR2GRAY))
    outputs = {}
    for name in ("cnn.pt", "cnn.onnx"):
        result = run_cli("upscale", "a.png", "g.png", "-o", f"out_{name}", "--model", name,
                         "--tile", tile, "--device", "cpu", "--precision", "fp32", cwd=tmp_path)
        assert "upscaled 2 image(s), 0 failed" in result.stdout
        outputs[name] = [read(tmp_path / f"out_{name}" / f) for f in ("a_x4.png", "g_x4.png")]
    assert "model: ONNX cnn.onnx (float32" in result.stderr
    for torch_out, onnx_out in zip(outputs["cnn.pt"], outputs["cnn.onnx"]):
        assert torch_out.shape == onnx_out.shape and onnx_out.shape[:2] in ((180, 280),
                                                                            (84, 76))
        assert np.abs(torch_out.astype(int) - onnx_out).max() <= 1


def test_an_onnx_model_takes_batches_of_tiles(ckpt):
    from srcore.infer import upscale_array
    from srcore.onnx_model import OnnxModel

    model, img = OnnxModel(ckpt.with_suffix(".onnx")), photo(64, 96)
    one = upscale_array(model, img, tile=16, tiles_per_batch=1)  # 24 tiles of 4 padded shapes
    batched = upscale_array(model, img, tile=16, tiles_per_batch=4)
    assert batched.shape == one.shape and np.abs(batched.astype(int) - one).max() <= 1


def test_upscale_with_an_fp16_onnx_file_stays_close(tmp_path, ckpt):
    cv2.imwrite(str(tmp_path / "a.png"), photo(20, 24))
    for name in ("cnn.pt", "cnn.fp16.onnx"):
        run_cli("upscale", "a.png", "-o", f"out_{name}", "--model", name, "--device", "cpu",
                "--precision", "fp32" if name.endswith(".pt") else "auto", cwd=tmp_path)
    fp32, fp16 = (read(tmp_path / f"out_{name}" / "a_x4.png")
                  for name in ("cnn.pt", "cnn.fp16.onnx"))
    assert np.abs(fp32.astype(int) - fp16).mean() < 1


def expect_refusal(result, *texts):
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    for text in texts:
        assert text in result.stderr


@pytest.mark.parametrize("name, content, message", [
    ("junk.pt", np.random.default_rng(0).bytes(3000), "junk.pt: not a PyTorch checkpoint"),
    ("disc.pt", "disc", "disc.pt: a srcore-discriminator file, not a generator; use a "
                        "generator checkpoint (models/cnn.pt or models/gan.pt)"),
    ("srvgg.pth", "srvgg", "srvgg.pth: not an RRDBNet checkpoint"),
    ("x2.pth", "x2", "x2.pth: takes 12 input channels"),
])
def test_export_refuses_what_is_not_an_rrdbnet_generator(tmp_path, name, content, message):
    path = tmp_path / name
    if content == "disc":  # our pipeline's discriminator, saved as pretrain-disc saves it
        from srcore.models.discriminator import save_discriminator

        save_discriminator(path, Discriminator(widths=(8, 8), hidden=(8, 8)))
    elif content == "srvgg":  # Real-ESRGAN's other architecture (realesr-general-x4v3)
        torch.save({"params": {"body.0.weight": torch.zeros(64, 3, 3, 3),
                               "body.0.bias": torch.zeros(64)}}, path)
    elif content == "x2":  # RealESRGAN_x2plus: pixel-unshuffle in front, 12 channels
        state = tiny(skip="none").state_dict()
        state["conv_first.weight"] = torch.zeros(8, 12, 3, 3)
        torch.save({"params_ema": state}, path)
    else:
        path.write_bytes(content)
    result = run_cli("export", name, "-o", "out.onnx", cwd=tmp_path, check=False)
    expect_refusal(result, message)
    assert not (tmp_path / "out.onnx").exists()


@pytest.mark.parametrize("content", [np.random.default_rng(1).bytes(4000), b""])
def test_upscale_refuses_a_corrupt_onnx_file_before_any_image(tmp_path, content):
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    (tmp_path / "bad.onnx").write_bytes(content)
    result = run_cli("upscale", "a.png", "-o", "out", "--model", "bad.onnx", cwd=tmp_path,
                     check=False)
    expect_refusal(result, "bad.onnx: not a usable ONNX model", "srcore export")
    assert not (tmp_path / "out").exists()


def test_upscale_refuses_a_precision_for_an_onnx_file(tmp_path, ckpt):
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    with pytest.raises(SrcoreError, match="--precision bf16: an .onnx model runs at the prec"):
        run([tmp_path / "a.png"], tmp_path / "out", tmp_path / "cnn.onnx", precision="bf16")
    assert not (tmp_path / "out").exists()


def test_a_missing_onnx_extra_names_the_install_command(tmp_path, ckpt, monkeypatch):
    from srcore.onnx_export import export
    from srcore.onnx_model import OnnxModel

    real_import = builtins.__import__

    def no_onnxruntime(name, *args, **kwargs):
        if name.split(".")[0] == "onnxruntime":
            raise ImportError(f"No module named {name!r}", name=name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_onnxruntime)
    for call in (lambda: export(ckpt, [(tmp_path / "x.onnx", "fp32")]),
                 lambda: OnnxModel(tmp_path / "x.onnx")):
        with pytest.raises(SrcoreError, match=re.escape(f"onnx extra (onnxruntime is not "
                                                         f"installed): {INSTALL}")) as caught:
            call()
        assert "onnxruntime is not installed" in str(caught.value)
    assert not (tmp_path / "x.onnx").exists()

    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    with pytest.raises(SrcoreError, match="onnx extra"):
        run([tmp_path / "a.png"], tmp_path / "out", tmp_path / "x.onnx", device="cpu")


def test_the_install_command_names_the_onnx_extra_and_works_outside_the_project():
    """The command in the missing-extra message installs pyproject's onnx extra, and from any
    folder: an installed srcore has no project folder for `pip install -e ".[onnx]"`."""
    import json
    import shlex

    from conftest import REPO

    # the line `onnx = ["onnx>=1.15", ...]` (tomllib is Python 3.11+)
    line = re.search(r"^onnx = (\[.*\])$", (REPO / "pyproject.toml").read_text(), re.M)
    extra = json.loads(line.group(1))
    assert shlex.split(INSTALL) == ["pip", "install", *extra]


def test_an_export_that_fails_its_check_leaves_no_file(tmp_path, ckpt, monkeypatch):
    import srcore.onnx_export as onnx_export

    monkeypatch.setitem(onnx_export.TOLERANCE, "fp32", -1.0)  # any difference is too much
    with pytest.raises(SrcoreError, match=r"new.onnx: onnxruntime differs from torch by .*; "
                                          "not written"):
        onnx_export.export(ckpt, [(tmp_path / "new.onnx", "fp32")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.fp16.onnx", "cnn.onnx", "cnn.pt"]


def test_export_keeps_an_existing_file_unless_overwrite(tmp_path, ckpt):
    before = (tmp_path / "cnn.onnx").read_bytes()
    (tmp_path / "cnn.onnx").write_bytes(b"mine")
    result = run_cli("export", "cnn.pt", "-o", "cnn.onnx", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "cnn.onnx exists; pass --overwrite to replace it" in result.stderr
    assert (tmp_path / "cnn.onnx").read_bytes() == b"mine"
    # --fp16's second file counts too, before anything is written
    (tmp_path / "new.fp16.onnx").write_bytes(b"mine")
    result = run_cli("export", "cnn.pt", "-o", "new.onnx", "--fp16", cwd=tmp_path, check=False)
    assert result.returncode == 2 and "new.fp16.onnx exists" in result.stderr
    assert not (tmp_path / "new.onnx").exists()
    run_cli("export", "cnn.pt", "-o", "cnn.onnx", "--overwrite", cwd=tmp_path)
    assert (tmp_path / "cnn.onnx").read_bytes() == before


@pytest.mark.parametrize("signum", [2, 15])
def test_an_interrupted_fp16_export_writes_neither_file_so_the_same_command_runs_again(
        tmp_path, signum):
    """Ctrl-C or SIGTERM while the --fp16 file was made used to leave the fp32 file written,
    so running the same command again stopped at once: 'x.onnx exists; pass --overwrite'."""
    save_generator(tmp_path / "cnn.pt", tiny())
    # the signal comes while the second file is exported, from the CLI's own process
    patch = ("import os, torch\n"
             "real = torch.onnx.export\n"
             "calls = []\n"
             "def export(*args, **kwargs):\n"
             "    calls.append(1)\n"
             f"    if len(calls) == 2: os.kill(os.getpid(), {signum})\n"
             "    return real(*args, **kwargs)\n"
             "torch.onnx.export = export\n")
    out = run_cli_patched(patch, "export", "cnn.pt", "-o", "cnn.onnx", "--fp16", cwd=tmp_path)
    assert out.returncode == 128 + signum, out.stderr
    assert out.stderr.strip().splitlines()[-1] == "interrupted: stopped", out.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.pt"]
    run_cli("export", "cnn.pt", "-o", "cnn.onnx", "--fp16", cwd=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cnn.fp16.onnx", "cnn.onnx", "cnn.pt"]


@pytest.mark.parametrize("value", ["{not json", '{"rrdb": "x", "features": 8}',
                                   '{"rrdb": 1, "features": 1000000000000}', "[1, 2]"])
def test_a_bad_config_in_an_onnx_files_metadata_is_ignored_with_a_note(tmp_path, ckpt, value,
                                                                        capsys):
    """The srcore_config metadata sets only the receptive radius and the memory estimate: a
    damaged or crafted one (which crashed with a traceback, or made any image 'out of
    memory') is named and ignored, as for an .onnx file from elsewhere."""
    import onnx

    from srcore.onnx_model import CONFIG_KEY, OnnxModel

    proto = onnx.load(str(tmp_path / "cnn.onnx"))
    for prop in proto.metadata_props:
        if prop.key == CONFIG_KEY:
            prop.value = value
    onnx.save(proto, str(tmp_path / "odd.onnx"))
    assert OnnxModel(tmp_path / "odd.onnx").config == {}
    assert f"odd.onnx: its {CONFIG_KEY} metadata is not valid" in capsys.readouterr().err
    cv2.imwrite(str(tmp_path / "a.png"), photo(8, 8))
    summary = run([tmp_path / "a.png"], tmp_path / "out", tmp_path / "odd.onnx", device="cpu")
    assert summary.ok and (tmp_path / "out" / "a_x4.png").is_file()


def test_export_from_python_leaves_the_callers_random_numbers_as_they_were(tmp_path, ckpt):
    """Loading a checkpoint builds a net whose initial weights are drawn, and export checks
    itself on a seeded random batch: a notebook's own random sequence must go on as if neither
    had happened."""
    from srcore.onnx_export import export

    torch.manual_seed(123)
    torch.rand(3)
    expected = torch.rand(5)
    torch.manual_seed(123)
    torch.rand(3)
    export(ckpt, [(tmp_path / "again.onnx", "fp32")])
    assert torch.equal(torch.rand(5), expected)
