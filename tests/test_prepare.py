import numpy as np
import pytest

from srcore.data.prepare import downsample_all, shrink_and_crop, split_counts, split_names
from srcore.errors import SrcoreError
from srcore.io import read_rgb8, write_png

from images import photo, write_modes


def test_div2k_sized_image_is_halved_keeping_aspect():
    out = shrink_and_crop(np.zeros((1356, 2040, 3), np.uint8), 1020, 4)
    assert out.shape == (678 - 678 % 4, 1020, 3)


def test_portrait_keeps_aspect_and_small_images_are_only_cropped():
    out = shrink_and_crop(np.zeros((2040, 1152, 3), np.uint8), 1020, 4)
    assert out.shape == (1020, 576, 3)
    small = photo(43, 58)
    assert np.array_equal(shrink_and_crop(small, 1020, 4), small[:40, :56])


@pytest.mark.parametrize("n, expected", [
    (903, {"train": 700, "val": 101, "test": 102}),
    (900, {"train": 698, "val": 101, "test": 101}),
    (11, {"train": 7, "val": 2, "test": 2}),
    (5, {"train": 1, "val": 2, "test": 2}),
    (1806, {"train": 1400, "val": 202, "test": 204}),
])
def test_split_counts_scale_with_largest_remainder(n, expected):
    counts = split_counts(n, {"train": 700, "val": 101, "test": 102}, 2)
    assert counts == expected and sum(counts.values()) == n


@pytest.mark.parametrize("wanted, expected", [
    ({"train": 700, "val": 101, "test": 100000}, {"train": 1, "val": 1, "test": 9}),
    ({"train": 1, "val": 0, "test": 9}, {"train": 1, "val": 1, "test": 9}),
    ({"train": 0, "val": 0, "test": 1}, {"train": 1, "val": 1, "test": 9}),
])
def test_split_counts_keep_every_split_when_the_proportions_starve_one(wanted, expected):
    assert split_counts(11, wanted, 1) == expected


def test_split_counts_refuse_too_few_images():
    with pytest.raises(SrcoreError, match="at least 5"):
        split_counts(4, {"train": 700, "val": 101, "test": 102}, 2)


def test_split_is_seeded_disjoint_and_complete():
    names = [f"img{i:03d}" for i in range(50)]
    counts = split_counts(50, {"train": 700, "val": 101, "test": 102}, 2)
    a = split_names(names, counts, seed=1)
    assert a == split_names(list(reversed(names)), counts, seed=1)
    assert a != split_names(names, counts, seed=2)
    together = a["train"] + a["val"] + a["test"]
    assert sorted(together) == names and len(set(together)) == 50
    assert {k: len(v) for k, v in a.items()} == counts


def test_downsample_all_converts_modes_and_names_every_bad_file(tmp_path):
    paths = write_modes(tmp_path / "in")
    results = downsample_all(sorted(paths.items()), tmp_path / "out", 30, 4)
    for r in results:
        assert r.size == (28, 20)  # 56x40 shrunk to a longer side of 28, divisible by 4
        assert read_rgb8(tmp_path / "out" / f"{r.name}.png").shape == (20, 28, 3)
    assert {r.name: r.conversions for r in results}["gray"] == ["grayscale"]

    (tmp_path / "in" / "bad1.png").write_bytes(b"junk")
    (tmp_path / "in" / "bad2.jpg").write_bytes(b"")
    write_png(tmp_path / "in" / "flat.png", np.full((40, 56, 3), 120, np.uint8))
    sources = sorted(paths.items()) + [("bad1", tmp_path / "in" / "bad1.png"),
                                       ("bad2", tmp_path / "in" / "bad2.jpg"),
                                       ("flat", tmp_path / "in" / "flat.png")]
    with pytest.raises(SrcoreError, match="3 image") as err:
        downsample_all(sources, tmp_path / "out2", 30, 4)
    assert "bad1.png" in str(err.value) and "bad2.jpg" in str(err.value)
    assert "flat.png: one colour (120, 120, 120) over the whole image" in str(err.value)


def test_a_full_disk_stops_downsample_with_one_line_naming_the_output(tmp_path, monkeypatch):
    # a write that fails (disk full, read-only) is not a bad image: one error naming the output
    # by the folder it is known by (not the hidden temporary one), and no further images tried
    import errno
    import os

    import srcore.data.prepare as prepare
    from srcore.atomic import write_error

    calls = []

    def full(path, rgb):
        calls.append(path)
        err = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise write_error(path, err) from err

    monkeypatch.setattr(prepare, "write_png", full)
    monkeypatch.setattr(prepare.os, "cpu_count", lambda: 1)
    paths = write_modes(tmp_path / "in")
    with pytest.raises(SrcoreError) as err:
        downsample_all(sorted(paths.items()), tmp_path / ".hr.123.tmp", 30, 4,
                       final_dir=tmp_path / "hr")
    message = str(err.value)
    first = sorted(paths)[0]
    assert message.startswith(f"could not write {tmp_path / 'hr' / first}.png: No space left")
    assert ".tmp" not in message and "cannot be used" not in message and "\n" not in message
    assert len(calls) == 1
