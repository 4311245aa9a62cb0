"""Where the pipeline keeps its files, relative to the project root (DVC runs stages there)."""

from pathlib import Path

RAW = Path("data/raw")
DOWNLOADS = Path("data/downloads")
HR = Path("data/hr")
SPLIT = Path("data/split.json")
PRETRAINED = Path("models/pretrained")
METRICS = Path("metrics")
MANIFEST = "manifest.json"
CNN = Path("models/cnn.pt")
CNN_LAST = Path("models/cnn_last.pt")
