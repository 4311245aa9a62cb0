"""Sizes fixed in the code, not in params.yaml, in a module that imports nothing: upscale and
make-lq name them without importing the network code (torch), and the CLI, whose --help must
not import torch, shows the default tile pad.
"""

SCALE = 4  # the generator's factor (RRDBNet is 4x; params.yaml's data.scale may only be 4)
DEFAULT_TILE_PAD = 16  # LR pixels of context around each tile (srcore.infer); --tile-pad
