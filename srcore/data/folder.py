"""`data.source: dir`: a folder of the user's own images."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Iterator

from srcore.errors import SrcoreError
from srcore.io import (IMAGE_SUFFIXES, broken_link, file_or_broken_link, hidden, is_image_name,
                       progress_bar, read_image)


def check_folder(folder: Path | str) -> Path:
    """data.dir as a path, which must be a folder: in a queued experiment's copy of the
    project, one that holds the images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise SrcoreError(f"data.dir={str(folder)!r} is not a folder; set data.dir to a folder "
                          "of images (e.g. dvc exp run -S data.dir=/path/to/images)")
    _check_copied(folder)
    return folder


def image_files(folder: Path) -> Iterator[Path]:
    """The image files under `folder`, recursively, hidden ones left out. A symbolic link that
    leads nowhere is listed too, to be named, not skipped."""
    return (p for p in folder.rglob("*") if is_image_name(p) and file_or_broken_link(p)
            and not hidden(p, folder))


def _check_copied(folder: Path) -> None:
    """A queued (or --temp) experiment runs in a copy of the project that has only the files
    git tracks (DVC_ROOT names the project): a relative data.dir there is the empty
    data/photos of the clone, not the user's photos."""
    from srcore.tracking import project_root

    project = project_root()
    if (folder.is_absolute() or project == Path.cwd().resolve() or any(image_files(folder))
            or not (project / folder).is_dir() or not any(image_files(project / folder))):
        return
    # `dvc exp run -C data/photos` does not help: DVC 3 cannot copy a folder git has
    raise SrcoreError(f"data.dir={str(folder)!r} has no images in this experiment's copy of "
                      f"the project ({Path.cwd()}): a queued or --temp experiment gets only "
                      "the files git tracks. Give data.dir as an absolute path: "
                      f"dvc exp run --queue -S data.dir={project / folder} ...")


def folder_images(folder: Path) -> list[tuple[str, Path]]:
    """(name, file) for every image under `folder`, recursively; names unique and sorted.

    Every file is decoded up front, so that all bad files (a truncated JPEG too) are named in
    one error, by their path in `folder`.
    """
    folder = check_folder(folder)
    files = sorted(image_files(folder))
    if not files:
        raise SrcoreError(f"data.dir={str(folder)!r} holds no images "
                          f"(looked for {' '.join(IMAGE_SUFFIXES)}, recursively)")
    problems, images, seen = [], [], {}
    for path in files:
        if not path.exists():
            problems.append(broken_link(path))
            continue
        # nested files get their folder in the name so that a/x.png and b/x.png stay apart
        name = "__".join(path.relative_to(folder).with_suffix("").parts)
        # case-blind: on macOS and Windows, Photo.png would overwrite photo.png in data/raw
        if name.casefold() in seen:
            problems.append(f"{path}: same name as {seen[name.casefold()]}; rename one of them")
            continue
        seen[name.casefold()] = path
        images.append((name, path))

    def decodes(item):
        try:
            read_image(item[1])
        except SrcoreError as err:
            return str(err)

    # OpenCV releases the GIL while decoding, so threads scale
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:  # a progress bar: a
        # folder of camera photos takes minutes to decode
        problems += [p for p in progress_bar(pool.map(decodes, images), total=len(images),
                                             desc="decode", unit="img") if p]
    if problems:
        raise SrcoreError(f"{len(problems)} bad file(s) in data.dir={str(folder)!r}; remove or fix "
                          "them and re-run:\n  " + "\n  ".join(problems))
    return images


def skipped_kinds(folder: Path) -> dict[str, int]:
    """How many files of each suffix under `folder` are not images of a supported kind (HEIC
    photos, say), most first; hidden files are left out."""
    from collections import Counter

    folder = Path(folder)
    kinds = Counter(p.suffix.lower() or "(no suffix)" for p in folder.rglob("*")
                    if p.is_file() and not is_image_name(p) and not hidden(p, folder))
    return dict(kinds.most_common())
