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


def check_data_dir(data) -> None:
    """data.dir must not be, hold or lie in the pipeline's own image folders: it would read
    the pipeline's outputs back in as new photos, a few more each run, the same photo under
    new names in train and test."""
    from srcore.errors import SrcoreError

    if data.source != "dir":
        return
    folder = Path(data.dir).resolve()
    for own in (RAW, HR, DOWNLOADS):
        if own.resolve().is_relative_to(folder) or folder.is_relative_to(own.resolve()):
            raise SrcoreError(f"data.dir={data.dir!r} overlaps {own}/, which the pipeline "
                              "writes: its images would be read back in as new photos on "
                              "every run; put your photos in a folder of their own (e.g. "
                              "data/photos) and set data.dir to it")
