"""Sizes fixed in the code, not in params.yaml, in a module that imports nothing: upscale and
make-lq name them without importing the network code (torch).
"""

SCALE = 4  # the generator's factor (RRDBNet is 4x; params.yaml's data.scale may only be 4)
