"""Data sources (sample, div2k, dir), preparation (downsample, split) and training datasets."""
