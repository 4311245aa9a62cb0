"""srcore: a reproducible, tracked pipeline for 4x image super-resolution."""

__version__ = "0.1.0"
