import pickle

import pytest
import torch

from srcore.errors import SrcoreError
from srcore.models.checkpoint import load_generator, save_generator
from srcore.models.rrdb import RRDBNet


def n_params(model):
    return sum(p.numel() for p in model.parameters())


def test_parameter_counts_match_esrgan():
    assert n_params(RRDBNet(rrdb=23, features=64, growth=32)) == 16_697_987
    assert n_params(RRDBNet(rrdb=2)) == 1_590_083


@pytest.mark.parametrize("height, width", [(17, 23), (1, 1), (8, 5)])
def test_odd_sizes_give_4x_outputs(height, width):
    model = RRDBNet(rrdb=1, features=8, growth=8).eval()
    with torch.no_grad():
        assert model(torch.rand(2, 3, height, width)).shape == (2, 3, 4 * height, 4 * width)


def test_bicubic_skip_makes_the_output_bicubic_plus_detail():
    torch.manual_seed(0)
    plain = RRDBNet(rrdb=1, features=8, growth=8, skip="none").eval()
    skip = RRDBNet(rrdb=1, features=8, growth=8, skip="bicubic").eval()
    skip.load_state_dict(plain.state_dict())
    x = torch.rand(1, 3, 12, 10)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic",
                                              align_corners=False)
    with torch.no_grad():
        assert torch.allclose(skip(x), plain(x) + bicubic, atol=1e-6)


def test_a_fresh_bicubic_skip_model_is_exactly_bicubic_and_learns_from_there():
    model = RRDBNet(rrdb=1, features=8, growth=8, skip="bicubic")
    x = torch.rand(2, 3, 6, 7)
    bicubic = torch.nn.functional.interpolate(x, scale_factor=4, mode="bicubic",
                                              align_corners=False)
    assert torch.equal(model(x).detach(), bicubic)
    torch.nn.functional.l1_loss(model(x), torch.rand(2, 3, 24, 28)).backward()
    assert model.conv_last.weight.grad.abs().sum() > 0
    assert RRDBNet(rrdb=1, features=8, growth=8, skip="none").conv_last.weight.abs().sum() > 0


def test_dense_block_convs_start_small_like_basicsr():
    torch.manual_seed(0)
    model = RRDBNet(rrdb=1, features=64, growth=32)
    conv = model.body[0].rdb1.conv1.weight
    kaiming_std = (2 / conv[0].numel()) ** 0.5
    assert conv.std().item() == pytest.approx(0.1 * kaiming_std, rel=0.1)
    assert model.body[0].rdb1.conv1.bias.abs().max() == 0
    assert model.conv_first.weight.std().item() > 3 * conv.std().item()  # PyTorch default


def basicsr_state_dict(blocks=2, features=16, growth=8):
    """A state dict laid out as BasicSR's RRDBNet, built from names and shapes alone."""
    torch.manual_seed(1)
    shapes = {"conv_first": (features, 3)}
    for i in range(blocks):
        for r in (1, 2, 3):
            for c in range(1, 6):
                out = features if c == 5 else growth
                shapes[f"body.{i}.rdb{r}.conv{c}"] = (out, features + (c - 1) * growth)
    for name in ("conv_body", "conv_up1", "conv_up2", "conv_hr"):
        shapes[name] = (features, features)
    shapes["conv_last"] = (3, features)
    state = {}
    for name, (out, inp) in shapes.items():
        state[f"{name}.weight"] = torch.randn(out, inp, 3, 3) * 0.05
        state[f"{name}.bias"] = torch.randn(out) * 0.01
    return state


@pytest.mark.parametrize("wrap", [None, "params", "params_ema"])
def test_basicsr_checkpoints_load_as_they_are(tmp_path, wrap):
    state = basicsr_state_dict()
    path = tmp_path / "foreign.pth"
    torch.save(state if wrap is None else {wrap: state, "other": 1}, path)
    model, _ = load_generator(path)
    assert model.config == {"rrdb": 2, "features": 16, "growth": 8, "skip": "none"}
    ours = RRDBNet(rrdb=2, features=16, growth=8, skip="none").eval()
    ours.load_state_dict(state)
    x = torch.rand(1, 3, 9, 7)
    with torch.no_grad():
        assert torch.equal(model(x), ours(x))


def test_our_checkpoint_round_trip_keeps_the_skip(tmp_path):
    model = RRDBNet(rrdb=1, features=8, growth=8, skip="bicubic")
    save_generator(tmp_path / "cnn.pt", model, epoch=3, metrics={"psnr_y": 30.0})
    loaded, ckpt = load_generator(tmp_path / "cnn.pt")
    assert loaded.config == model.config and ckpt["epoch"] == 3
    for a, b in zip(loaded.state_dict().values(), model.state_dict().values()):
        assert torch.equal(a, b)


def test_bad_checkpoints_are_clear_errors(tmp_path):
    with pytest.raises(SrcoreError, match="checkpoint not found"):
        load_generator(tmp_path / "none.pt")
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pt")
    with pytest.raises(SrcoreError, match="not an RRDBNet checkpoint"):
        load_generator(tmp_path / "other.pt")
    (tmp_path / "junk.pt").write_bytes(b"junk")
    with pytest.raises(SrcoreError, match="junk.pt: not a PyTorch checkpoint"):
        load_generator(tmp_path / "junk.pt")


class _Evil:
    def __reduce__(self):
        import os
        return (os.system, ("touch /tmp/srcore-evil-marker",))


def test_checkpoints_cannot_run_code(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"conv_first.weight": _Evil()}, path, pickle_module=pickle)
    with pytest.raises(SrcoreError, match="evil.pt: holds Python objects other than tensors, "
                                          "so loading it could run code"):
        load_generator(path)
    import os
    assert not os.path.exists("/tmp/srcore-evil-marker")


def _tiny_state():
    return RRDBNet(rrdb=1, features=8, growth=8).state_dict()


@pytest.mark.parametrize("case", ["block index", "wide stride-0 tensor", "our config"])
def test_a_small_file_cannot_make_a_huge_model(tmp_path, case):
    # a file of ~100 KB that would make RRDBNet build millions of blocks (minutes, then the
    # OOM killer) or allocate tens of GB: refused before any model is built
    state = _tiny_state()
    if case == "block index":
        state["body.9999999.rdb1.conv1.weight"] = state["body.0.rdb1.conv1.weight"]
        obj = state
    elif case == "wide stride-0 tensor":  # a 1-element storage viewed as 30000x3x3x3
        state["conv_first.weight"] = torch.zeros(1).expand(30000, 3, 3, 3)
        obj = state
    else:
        obj = {"format": "srcore-generator", "state_dict": state,
               "model": {"rrdb": 10 ** 7, "features": 8, "growth": 8, "skip": "none"}}
    torch.save(obj, tmp_path / "big.pt")
    with pytest.raises(SrcoreError, match=r"big.pt: .*(damaged|crafted)"):
        load_generator(tmp_path / "big.pt")


@pytest.mark.parametrize("obj", [
    {"format": "srcore-generator"},
    {"format": "srcore-generator", "model": "x", "state_dict": {}},
    {"format": "srcore-generator", "state_dict": [1],
     "model": {"rrdb": 1, "features": 8, "growth": 8, "skip": "none"}},
    {"format": "srcore-generator", "state_dict": {},
     "model": {"rrdb": 1, "features": 8, "growth": 8, "skip": "none", "extra": 1}},
])
def test_a_damaged_srcore_checkpoint_is_a_clear_error(tmp_path, obj):
    torch.save(obj, tmp_path / "bad.pt")
    with pytest.raises(SrcoreError, match=r"bad.pt: .*damaged"):
        load_generator(tmp_path / "bad.pt")
