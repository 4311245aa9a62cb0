"""The default offline data: real photographs that ship inside installed packages.

Not motorcycle_right: it is the stereo twin of motorcycle_left and would leak across splits.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from srcore.errors import SrcoreError

# (name, package, path inside the package)
SAMPLE_PHOTOS = (
    ("astronaut", "skimage", "data/astronaut.png"),
    ("chelsea", "skimage", "data/chelsea.png"),
    ("coffee", "skimage", "data/coffee.png"),
    ("rocket", "skimage", "data/rocket.jpg"),
    ("motorcycle_left", "skimage", "data/motorcycle_left.png"),
    ("hubble_deep_field", "skimage", "data/hubble_deep_field.jpg"),
    ("ihc", "skimage", "data/ihc.png"),
    ("retina", "skimage", "data/retina.jpg"),
    ("grace_hopper", "matplotlib", "mpl-data/sample_data/grace_hopper.jpg"),
    ("china", "sklearn", "datasets/images/china.jpg"),
    ("flower", "sklearn", "datasets/images/flower.jpg"),
)


def sample_photo_paths() -> list[tuple[str, Path, str]]:
    """(name, file, origin) of each bundled photograph, found without importing the packages."""
    photos = []
    for name, package, relative in SAMPLE_PHOTOS:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise SrcoreError(f"package {package!r} is not installed, so the sample photo "
                              f"{name!r} is missing; run the install command in README.md")
        path = Path(spec.submodule_search_locations[0]) / relative
        if not path.is_file():
            raise SrcoreError(f"{path}: sample photo {name!r} not found in package {package!r}; "
                              "reinstall it (pip install --force-reinstall "
                              f"{'scikit-image' if package == 'skimage' else package})")
        photos.append((name, path, f"{package}: {relative}"))
    return photos
