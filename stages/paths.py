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
    _check_copied(Path(data.dir))
    folder = Path(data.dir).resolve()
    for own in (RAW, HR, DOWNLOADS):
        if own.resolve().is_relative_to(folder) or folder.is_relative_to(own.resolve()):
            raise SrcoreError(f"data.dir={data.dir!r} overlaps {own}/, which the pipeline "
                              "writes: its images would be read back in as new photos on "
                              "every run; put your photos in a folder of their own (e.g. "
                              "data/photos) and set data.dir to it")


def _check_copied(folder: Path) -> None:
    """A queued (or --temp) experiment runs in a copy of the project that has only the files
    git tracks (DVC_ROOT names the project): a relative data.dir there is the empty
    data/photos of the clone, not the user's photos."""
    from srcore.errors import SrcoreError
    from srcore.io import is_image_name
    from srcore.tracking import project_root

    def has_images(path: Path) -> bool:
        return path.is_dir() and any(is_image_name(p) for p in path.rglob("*"))

    project = project_root()
    if (folder.is_absolute() or project == Path.cwd().resolve() or has_images(folder)
            or not has_images(project / folder)):
        return
    # `dvc exp run -C data/photos` does not help: DVC 3 cannot copy a folder git has
    raise SrcoreError(f"data.dir={str(folder)!r} has no images in this experiment's copy of "
                      f"the project ({Path.cwd()}): a queued or --temp experiment gets only "
                      "the files git tracks. Give data.dir as an absolute path: "
                      f"dvc exp run --queue -S data.dir={project / folder} ...")
