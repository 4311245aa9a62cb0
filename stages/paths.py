"""Where the pipeline keeps its files, relative to the project root (DVC runs stages there)."""

from pathlib import Path

RAW = Path("data/raw")
DOWNLOADS = Path("data/downloads")
HR = Path("data/hr")
SPLIT = Path("data/split.json")
PARAMS_CHECKED = Path("data/params_checked.txt")
MODELS = Path("models")
PRETRAINED = MODELS / "pretrained"
METRICS = Path("metrics")
MANIFEST = "manifest.json"
CNN = Path("models/cnn.pt")
CNN_LAST = Path("models/cnn_last.pt")
DISC = Path("models/disc.pt")
DISC_LAST = Path("models/disc_last.pt")
GAN = Path("models/gan.pt")
GAN_DISC = Path("models/gan_disc.pt")
GAN_LAST = Path("models/gan_last.pt")
