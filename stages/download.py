"""download: the HR photographs of data.source into data/raw/ with a manifest."""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

from srcore.atomic import atomic_dir, write_error
from srcore.tracking import stage_run
from stages.declared import stage_params
from stages.paths import DOWNLOADS, MANIFEST, RAW, check_data_dir


def run(params_path: Path) -> None:
    params, values = stage_params(params_path, "download")
    source = params.data.source
    # find and check the inputs before any tracking or writing starts
    if source == "sample":
        from srcore.data.sample import sample_photo_paths

        inputs = sample_photo_paths()
    elif source == "dir":
        from srcore.data.folder import folder_images

        check_data_dir(params.data)
        folder = Path(params.data.dir)
        inputs = [(name, path, str(path)) for name, path in folder_images(folder)]
        # symbolic links are followed; those leading out of data.dir are recorded (link_to)
        outside = {path: path.resolve() for _, path, _ in inputs
                   if not path.resolve().is_relative_to(folder.resolve())}
    with stage_run("download", params.mlflow.experiment, values) as mlflow:
        with atomic_dir(RAW) as out:
            images = _div2k(out) if source == "div2k" else _copy(inputs, out, source)
            if source == "dir":
                for image, (_, path, _) in zip(images, inputs):
                    if path in outside:
                        image["link_to"] = str(outside[path])
            manifest = {"source": source, "images": images}
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
        mlflow.log_metric("images", len(images))
        mlflow.log_dict(manifest, "raw_manifest.json")
    print(f"download: {len(images)} images from source {source!r} in {RAW}/")
    if source == "dir":
        from srcore.data.folder import skipped_kinds

        if kinds := skipped_kinds(folder):
            print(f"  {sum(kinds.values())} file(s) of other kinds skipped ("
                  + ", ".join(f"{n} {kind}" for kind, n in kinds.items())
                  + "); convert the photos among them to PNG or JPEG to use them")
        _report_copies(images, inputs)
    if source == "dir" and outside:
        print(f"  {len(outside)} file(s) of data.dir are symbolic links to files outside it, "
              f"followed (link_to in {RAW / MANIFEST}): " + ", ".join(map(str, outside)))


def _copy(inputs: list[tuple[str, Path, str]], out: Path, source: str) -> list[dict]:
    """Sample photos are re-encoded as PNG; a user's files are copied byte for byte."""
    from srcore.io import displayed_size, read_image, write_png

    images = []
    for name, path, origin in inputs:
        if source == "sample":
            file_name = f"{name}.png"
            write_png(out / file_name, read_image(path)[0])
        else:
            file_name = name + path.suffix.lower()
            shutil.copyfile(path, out / file_name)
        width, height = displayed_size(out / file_name)  # upright, as every stage reads it
        images.append({"name": name, "file": file_name, "origin": origin,
                       "width": width, "height": height})
    return images


def _div2k(out: Path) -> list[dict]:
    from srcore.data.download import DIV2K_FILES, download_div2k
    from srcore.io import probe
    from srcore.runlock import one_at_a_time
    from srcore.tracking import project_root

    # The project's data/downloads, also from the copy a queued experiment runs in (DVC_ROOT):
    # the 4 GB are fetched (or placed by hand) once for every experiment, and experiments
    # running side by side wait for each other instead of writing the same partial file.
    downloads = project_root() / DOWNLOADS
    with contextlib.ExitStack() as held:
        try:
            held.enter_context(one_at_a_time(downloads / ".lock"))
        except OSError as err:  # its first write: name it, not the data/raw being written
            raise write_error(downloads / ".lock", err) from None
        names = download_div2k(downloads, out, DIV2K_FILES)
    images = []
    for file_name in names:
        width, height, _ = probe(out / file_name)
        images.append({"name": Path(file_name).stem, "file": file_name, "origin": "DIV2K",
                       "width": width, "height": height})
    return images


def _report_copies(images: list[dict], inputs: list[tuple[str, Path, str]]) -> None:
    """Name the byte-identical copies of one photo: split apart, one could be in train and its
    copy in test."""
    from srcore.checksum import sha256_of

    first, copies = {}, []
    for image, (_, _, origin) in zip(images, inputs):
        digest = sha256_of(RAW / image["file"]).hexdigest()
        if digest in first:
            copies.append(f"{origin} = {first[digest]}")
        else:
            first[digest] = origin
    if copies:
        print(f"  {len(copies)} image(s) are byte-identical copies of another and may end up in "
              "different splits (train and test); remove the copies unless you mean it: "
              + ", ".join(copies))
