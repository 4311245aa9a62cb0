import numpy as np
import pytest

from srcore.errors import SrcoreError
from srcore.io import probe, read_image, read_rgb8, to_rgb8, write_png

from images import photo, png_header_only, write_modes


def test_every_mode_becomes_rgb8_with_its_conversion_named(tmp_path):
    paths = write_modes(tmp_path)
    expected = {"rgb": [], "gray": ["grayscale"], "rgba": ["alpha dropped"],
                "palette": ["palette"], "sixteen": ["16-bit"], "jpeg": []}
    for mode, path in paths.items():
        rgb, conversions = to_rgb8(*read_image(path))
        assert rgb.dtype == np.uint8 and rgb.shape == (40, 56, 3), mode
        assert conversions == expected[mode], mode
    # colour order and 16-bit scaling are exact
    assert np.array_equal(read_rgb8(paths["rgb"]), photo())
    assert np.array_equal(read_rgb8(paths["sixteen"]), photo())
    assert read_image(paths["sixteen"])[0].dtype == np.uint16


def test_write_png_round_trip(tmp_path):
    write_png(tmp_path / "out.png", photo())
    assert np.array_equal(read_rgb8(tmp_path / "out.png"), photo())
    assert [p.name for p in tmp_path.iterdir()] == ["out.png"]  # no temp file left


@pytest.mark.parametrize("content, message", [
    (b"", "empty file"),
    (b"this is not an image at all", "not a readable image"),
])
def test_bad_files_are_named(tmp_path, content, message):
    path = tmp_path / "bad.png"
    path.write_bytes(content)
    with pytest.raises(SrcoreError, match=message) as err:
        read_image(path)
    assert str(path) in str(err.value)


def test_truncated_png(tmp_path):
    good = write_modes(tmp_path)["rgb"]
    cut = tmp_path / "cut.png"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(SrcoreError, match="corrupt or truncated") as err:
        read_image(cut)
    assert "cut.png" in str(err.value)


def test_truncated_png_prints_no_decoder_noise_and_data_after_iend_is_allowed(tmp_path,
                                                                           capfd):
    import cv2

    ok, data = cv2.imencode(".png", photo(400, 600)[:, :, ::-1])  # several IDAT chunks
    (tmp_path / "cut.png").write_bytes(data.tobytes()[:len(data) // 2])
    with pytest.raises(SrcoreError, match="corrupt or truncated"):
        read_image(tmp_path / "cut.png")
    assert capfd.readouterr().err == ""  # no "libpng error" nor OpenCV "[ WARN ...]" line
    (tmp_path / "tail.png").write_bytes(data.tobytes() + bytes(5000))
    assert np.array_equal(read_rgb8(tmp_path / "tail.png"), photo(400, 600))


def test_decompression_bomb_refused_from_the_header(tmp_path):
    path = png_header_only(tmp_path / "bomb.png", 100_000, 100_000)
    with pytest.raises(SrcoreError, match="decompression bomb"):
        probe(path)


def test_a_file_far_larger_than_its_pixels_is_refused_unread(tmp_path):
    # a 20x16 PNG padded (sparsely: no disk used) to 65 MiB: the whole file would be read into
    # memory before decoding; padded to many GB, that exhausts memory
    path = tmp_path / "padded.png"
    write_png(path, photo(16, 20))
    with open(path, "r+b") as f:
        f.truncate(65 * 2 ** 20)
    with pytest.raises(SrcoreError, match=r"padded.png: 68,157,440 bytes, far more than a "
                                          r"20x16 image needs.*re-save it"):
        read_image(path)


def test_missing_file(tmp_path):
    with pytest.raises(SrcoreError, match="file not found"):
        read_image(tmp_path / "nope.png")


def exif_orientation(value):
    from PIL import Image

    exif = Image.Exif()
    exif[0x0112] = value
    return exif


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_is_applied_as_pil_does(tmp_path, orientation):
    from PIL import Image, ImageOps

    rgba = np.dstack([photo(), photo(seed=1)[:, :, 0]])  # lossless, and alpha kept
    Image.fromarray(rgba).save(tmp_path / "a.png", exif=exif_orientation(orientation))
    expected = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "a.png")))
    arr, mode = read_image(tmp_path / "a.png")
    assert mode == "RGBA" and np.array_equal(arr, expected)
    assert arr.shape == ((56, 40, 4) if orientation >= 5 else (40, 56, 4))


@pytest.mark.parametrize("orientation", range(1, 9))
def test_a_rotated_tiff_is_turned_once_not_twice(tmp_path, orientation):
    # OpenCV's TIFF decoder (libtiff) applies the Orientation tag itself, unlike its PNG, JPEG
    # and WebP decoders; applied again, a portrait TIFF came out upside down and landscape
    from PIL import Image

    rgb = photo()
    Image.fromarray(rgb).save(tmp_path / "a.png", exif=exif_orientation(orientation))
    Image.fromarray(rgb).save(tmp_path / "a.tif", exif=exif_orientation(orientation))
    Image.fromarray(rgb[:, :, 0].astype(np.uint16) * 257).save(
        tmp_path / "g16.tif", exif=exif_orientation(orientation))
    upright, _ = read_image(tmp_path / "a.png")  # as PIL shows it (the test above)
    arr, _ = read_image(tmp_path / "a.tif")
    assert np.array_equal(arr, upright)
    gray16, _ = read_image(tmp_path / "g16.tif")
    assert gray16.dtype == np.uint16
    assert np.array_equal(gray16, upright[:, :, 0].astype(np.uint16) * 257)


def test_a_rotated_camera_jpeg_reads_upright(tmp_path):
    from PIL import Image, ImageOps

    Image.fromarray(photo()).save(tmp_path / "cam.jpg", exif=exif_orientation(6), quality=95)
    upright = np.asarray(ImageOps.exif_transpose(Image.open(tmp_path / "cam.jpg")))
    rgb = read_rgb8(tmp_path / "cam.jpg")
    assert rgb.shape == upright.shape == (56, 40, 3)  # displayed portrait
    assert np.abs(rgb.astype(int) - upright).max() <= 2  # PIL's and OpenCV's JPEG decoders
