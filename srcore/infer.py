"""Tiled 4x inference: any image mode, bounded memory, the same pixels as one whole pass.

The image is cut into LR tiles of at most `tile` pixels a side (border tiles: tile + tile_pad).
Each tile goes through the network in a window with at least `tile_pad` LR pixels of real image
around it (at the image border: all there is, as the whole-image pass sees the network's own
zero padding there too), and only the tile's own 4x area of the result is kept. All the windows
of an image have one shape, at most tile + 2 tile_pad a side (`tiles`). An output pixel depends
on LR pixels up to `receptive_radius(model)` away (15 per RRDB block plus 4), so with
tile_pad >= that radius tiling is exact to float rounding for ANY tile size >= 1: the minimum
is on the context, not on the tile. With the default pad of 16 LR pixels
the remaining influence of farther pixels passes through the 0.2-scaled residual branches of
the dense blocks and is far below one 8-bit level in practice (tests/test_upscale.py checks it).

Memory: the output is preallocated as uint8/uint16 and each tile is written straight into it,
so besides input and output only one batch of tiles' tensors exists at a time; no float image
of the whole output is ever made. Larger tiles are faster (less overlap: ((tile + 2 pad) /
tile)^2 of the work) and need more memory.

Speed on a GPU: small tiles waste it. On an H200 at 2 RRDB blocks, 64-pixel tiles one at a
time gave 11 MP/s of output against 50 MP/s for the whole image in one pass: each small forward
leaves most of the GPU idle. So the tiles' windows, all of one shape, go through the network
together, `tiles_per_batch` at a time (batched == one at a time, to float rounding), each
batch's result rounded on the device and copied to the host in one transfer,
and `tile=None` (auto) picks the size from the free GPU memory: the whole image when it fits,
else the largest tile that does. Measured on an H100 (2 RRDB blocks, bf16, a 510x339 input):
whole image 145 MP/s; 64-pixel tiles 16 MP/s one at a time, 46 MP/s batched (the network
alone on 16 such tiles: 93 MP/s; the rest was host work per tile: rounding and one copy per
tile, and the border tiles' smaller windows in batches of their own; since then one window shape
and one copy per batch: on an H200, 256-pixel tiles batched ran at 0.95x (2 RRDB) and 1.04x
(15 RRDB) of the whole image's speed, docs/performance.md).
The memory a pass needs is measured once per model, device and precision by a probe on a small
input: bytes per LR pixel, since activations grow linearly with the pixels (on that H100,
8.5 KiB in bf16; the whole-image peaks at 510x339 and 1500x1000 were within 0.5% of the
probe's estimate). On a CPU, or for an ONNX model, auto is DEFAULT_TILE one tile at a time, as
before: there is no memory to probe, a CPU gains little from batching, and the CPU pipeline's
metrics stay the same.

The tiling is hand-written: no library does overlap tiling for an arbitrary torch model.
"""

from __future__ import annotations

import math
import weakref
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from srcore.choices import PRECISIONS
from srcore.sizes import DEFAULT_TILE_PAD
from srcore.train.runtime import autocast, inference_layout, pick_device, pick_precision

DEFAULT_TILE = 256
MIN_TILE = 32  # LR pixels: --tile's minimum (smaller tiles are mostly context); auto's unit
MEMORY_SHARE = 0.8  # of free GPU memory that auto plans to use: the probe misses fragmentation
MAX_TILES_PER_BATCH = 16  # keeps a GPU busy with small tiles; more only holds more memory
PROBE_SIDE = 64  # LR pixels of the memory probe's input

_bytes_per_pixel: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()  # model -> {key: B}


def receptive_radius(model) -> int:
    """LR pixels on each side of a pixel that can change its output (RRDBNet; else 0).

    conv_first and conv_body: 1 each; each RRDB: 3 dense blocks of 5 chained 3x3 convs = 15;
    the two nearest 2x upsamplings with conv_up1/conv_up2/conv_hr/conv_last: 2 (the bicubic
    skip reaches 2 as well).
    """
    config = getattr(model, "config", None) or {}
    return 15 * int(config["rrdb"]) + 4 if "rrdb" in config else 0


Box = tuple[int, int, int, int]  # (y0, y1, x0, x1) in LR pixels


def tiles(height: int, width: int, tile: int, tile_pad: int) -> list[tuple[Box, Box]]:
    """(box, window) pairs: the boxes cover the image; each goes through the network in its
    window, the box with at least tile_pad pixels of context on each side, or all the image
    there is on that side. tile 0: one box, the whole image."""
    if tile < 0:
        raise ValueError(f"tile must be >= 0, not {tile}")
    if not tile:
        return [((0, height, 0, width), (0, height, 0, width))]
    return [((y0, y1, x0, x1), (wy0, wy1, wx0, wx1))
            for (y0, y1), (wy0, wy1) in _spans(height, tile, tile_pad)
            for (x0, x1), (wx0, wx1) in _spans(width, tile, tile_pad)]


def _spans(length: int, tile: int, pad: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """One axis's (box, window) pairs, every window of one length, at most tile + 2 pad.

    A border window needs context on one side only, so it holds tile + pad pixels of its own
    box and an inner one tile: n windows cover n tile + 2 pad pixels. n is the fewest that
    cover the axis, and the boxes are then evened out (a 339-pixel side at tile 256, pad 16:
    two windows of 186, not a 272 and a 99), so that all the windows have one shape and batch
    together on a GPU without doing more work than uneven ones would.
    """
    count = max(1, -(-(length - 2 * pad) // tile))
    if count == 1:
        return [((0, length), (0, length))]
    step = -(-(length - 2 * pad) // count)
    side = min(step + 2 * pad, length)
    cuts = [0] + [pad + k * step for k in range(1, count)] + [length]
    spans = []
    for start, stop in zip(cuts, cuts[1:]):
        window = min(max(start - pad, 0), length - side)
        spans.append(((start, stop), (window, window + side)))
    return spans


def choose_tile(height: int, width: int, tile_pad: int, bytes_per_pixel: float,
                free_bytes: float) -> int:
    """0 (whole image) if its pass fits in MEMORY_SHARE of free_bytes, else largest_tile."""
    if height * width * bytes_per_pixel <= MEMORY_SHARE * free_bytes:
        return 0
    return largest_tile(tile_pad, bytes_per_pixel, free_bytes)


def largest_tile(tile_pad: int, bytes_per_pixel: float, free_bytes: float) -> int:
    """The largest multiple of MIN_TILE whose window (tile + 2 tile_pad a side) fits in
    MEMORY_SHARE of free_bytes; never less than MIN_TILE."""
    side = math.isqrt(int(MEMORY_SHARE * free_bytes / bytes_per_pixel)) - 2 * tile_pad
    return max(MIN_TILE, side // MIN_TILE * MIN_TILE)


def choose_tiles_per_batch(window_pixels: int, bytes_per_pixel: float, free_bytes: float) -> int:
    """How many tile windows of window_pixels fit in MEMORY_SHARE of free_bytes (1 to 16)."""
    fits = int(MEMORY_SHARE * free_bytes // (window_pixels * bytes_per_pixel))
    return max(1, min(MAX_TILES_PER_BATCH, fits))


def probes_memory(model, device: torch.device) -> bool:
    """Auto tiling and batching are planned from GPU memory: torch models on CUDA only."""
    return torch.device(device).type == "cuda" and isinstance(model, torch.nn.Module)


def free_gpu_bytes(device: torch.device) -> int:
    """Free device memory plus what PyTorch's allocator holds cached but unused."""
    free, _ = torch.cuda.mem_get_info(device)
    return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)


def bytes_per_pixel(model, device: torch.device, precision: str) -> float:
    """Peak GPU memory of one forward pass per LR pixel, measured once on a PROBE_SIDE^2 input
    (same precision, autocast and inference_mode as upscale_array) and cached."""
    device = torch.device(device)
    cached = _bytes_per_pixel.setdefault(model, {})
    key = (str(device), precision)
    if key not in cached:
        model.to(device).eval()
        x = torch.rand(1, 3, PROBE_SIDE, PROBE_SIDE, device=device)
        with torch.inference_mode(), autocast(precision, device):
            # a first pass outside the measurement: with torch.backends.cudnn.benchmark on (the
            # training stages and the benchmark), cuDNN tries its algorithms there, with
            # workspaces of up to GBs that a 64x64 probe would count as GBs per pixel (seen
            # on an H100: auto chose 320-pixel tiles for an image that fits 15 times over)
            model(inference_layout(x))
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
            model(inference_layout(x))  # the output counts in the peak, then is freed
        torch.cuda.synchronize(device)
        cached[key] = (torch.cuda.max_memory_allocated(device) - before) / PROBE_SIDE ** 2
    return cached[key]


def host_pass_bytes(model, window_pixels: int) -> int | None:
    """About the peak host memory of one RRDBNet pass over a window of window_pixels LR pixels
    on a CPU (None for a model of unknown layout, an .onnx one): at the HR end the network holds
    two float maps of `features` channels at scale^2 the pixels (the upsampled input of conv_up2
    or conv_hr and its output) and the 3-channel output and bicubic skip. Measured on a CPU at
    16 features, 700x500 LR, fp32: 2,430 bytes per LR pixel against 2,432 estimated."""
    config = getattr(model, "config", None) or {}
    if "features" not in config:
        return None
    scale = int(getattr(model, "scale", 4))
    return (2 * int(config["features"]) + 6) * scale ** 2 * 4 * window_pixels


def auto_tile(model, height: int, width: int, tile_pad: int = DEFAULT_TILE_PAD,
              device: str | torch.device = "cpu", precision: str = "fp32") -> int:
    """What tile=None means for this image: see the module doc (0 = whole image)."""
    device = torch.device(device)
    if not probes_memory(model, device):
        return DEFAULT_TILE
    return choose_tile(height, width, tile_pad, bytes_per_pixel(model, device, precision),
                       free_gpu_bytes(device))


def image_precision(precision: str, device: torch.device, sixteen_bit: bool,
                    key: str = "precision") -> str:
    """The precision an image is upscaled in: pick_precision's, but auto is fp32 for a 16-bit
    image (bf16 keeps 8 significant bits: auto does not spend its precision on speed)."""
    if precision == "auto" and sixteen_bit:
        return "fp32"
    return pick_precision(precision, device, key)


def upscale_array(model, img: np.ndarray, tile: int | None = None,
                  tile_pad: int = DEFAULT_TILE_PAD, device: str | torch.device = "cpu",
                  precision: str = "fp32",
                  progress: Callable[[int], object] | None = None,
                  tiles_per_batch: int | None = None) -> np.ndarray:
    """Upscale a decoded image 4x; the result has the input's mode and dtype.

    img: (H, W) gray or (H, W, 3) RGB or (H, W, 4) RGBA, uint8 or uint16. Gray goes through the
    network as three equal channels and comes back as their mean; the alpha of RGBA is upscaled
    with bicubic interpolation; 16-bit samples reach the network as floats in [0, 1] and come
    back as 16-bit. The model output is clamped to [0, 1] and rounded. `progress(1)` is called
    after each tile. tile None: auto_tile; tiles_per_batch None: as many as fit in free GPU
    memory for a torch model on CUDA, else 1. device and precision "auto" mean what upscale's
    --device / --precision auto mean (fp32 for a 16-bit image).
    """
    img = np.asarray(img)
    if img.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"expected uint8 or uint16 samples, not {img.dtype}")
    if not (img.ndim == 2 or (img.ndim == 3 and img.shape[2] in (3, 4))):
        raise ValueError(f"expected (H, W), (H, W, 3) or (H, W, 4), not {img.shape}")
    if tile_pad < 0:
        raise ValueError(f"tile_pad must be >= 0, not {tile_pad}")
    if tiles_per_batch is not None and tiles_per_batch < 1:
        raise ValueError(f"tiles_per_batch must be >= 1, not {tiles_per_batch}")
    if precision not in PRECISIONS:  # torch's autocast would take any other value as fp16
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, not {precision!r}")
    device = pick_device("auto") if device == "auto" else torch.device(device)
    if precision == "auto":
        precision = image_precision("auto", device, img.dtype == np.uint16)
    scale = int(getattr(model, "scale", 4))
    height, width = img.shape[:2]
    maxval = float(np.iinfo(img.dtype).max)
    gray, alpha = img.ndim == 2, img.ndim == 3 and img.shape[2] == 4
    out = np.empty((height * scale, width * scale, *img.shape[2:]), dtype=img.dtype)
    model.to(device).eval()
    if tile is None:
        tile = auto_tile(model, height, width, tile_pad, device, precision)

    pairs = tiles(height, width, tile, tile_pad)
    if tiles_per_batch is None:
        tiles_per_batch = 1
        if tile and probes_memory(model, device):
            _, (wy0, wy1, wx0, wx1) = pairs[0]  # all windows have one shape
            tiles_per_batch = choose_tiles_per_batch(
                (wy1 - wy0) * (wx1 - wx0), bytes_per_pixel(model, device, precision),
                free_gpu_bytes(device))
    quantized_dtype = torch.uint8 if img.dtype == np.uint8 else torch.int32

    def quantized(y: torch.Tensor) -> np.ndarray:
        """Rounded samples of a whole batch, copied to the host in one transfer."""
        return y.float().clamp_(0, 1).mul_(maxval).round_().to(quantized_dtype).cpu().numpy()

    with torch.inference_mode():
        for start in range(0, len(pairs), tiles_per_batch):
            batch = pairs[start:start + tiles_per_batch]
            patch = np.stack([img[wy0:wy1, wx0:wx1] for _, (wy0, wy1, wx0, wx1) in batch])
            patch = torch.from_numpy(patch.astype(np.float32) / maxval).to(device)
            if gray:
                x = patch[:, None].expand(-1, 3, -1, -1)
            else:
                x = patch[..., :3].permute(0, 3, 1, 2)
            with autocast(precision, device):
                y = model(inference_layout(x))
            samples = quantized(y.float().mean(1, keepdim=True) if gray else y)
            if alpha:
                alphas = quantized(F.interpolate(patch[:, None, :, :, 3], scale_factor=scale,
                                                 mode="bicubic", align_corners=False))
            for i, ((y0, y1, x0, x1), (wy0, _, wx0, _)) in enumerate(batch):
                # the tile's own area in its window's output
                oy, ox = (y0 - wy0) * scale, (x0 - wx0) * scale
                crop = (slice(oy, oy + (y1 - y0) * scale), slice(ox, ox + (x1 - x0) * scale))
                target = (slice(y0 * scale, y1 * scale), slice(x0 * scale, x1 * scale))
                if gray:
                    out[target] = samples[i, 0, crop[0], crop[1]]
                else:
                    out[(*target, slice(0, 3))] = samples[i, :, crop[0], crop[1]].transpose(
                        1, 2, 0)
                if alpha:
                    out[(*target, 3)] = alphas[i, 0, crop[0], crop[1]]
                if progress is not None:
                    progress(1)
    return out
