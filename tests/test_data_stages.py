"""The data stages through the CLI, as DVC runs them."""

import json
import sqlite3

import cv2
import numpy as np
import pytest
from PIL import Image

from srcore.io import read_rgb8, write_png

from conftest import run_cli, run_cli_patched, write_params, write_training_data
from images import photo, png_header_only, write_modes


def test_sample_download_downsample_split(project):
    out = run_cli("download", cwd=project)
    assert "11 images from source 'sample'" in out.stdout
    manifest = json.loads((project / "data/raw/manifest.json").read_text())
    assert len(manifest["images"]) == 11
    names = {img["name"] for img in manifest["images"]}
    assert "motorcycle_left" in names and "motorcycle_right" not in names
    first = manifest["images"][0]
    assert {"name", "origin", "width", "height"} <= set(first)
    assert read_rgb8(project / "data/raw" / first["file"]).shape == (first["height"],
                                                                      first["width"], 3)

    run_cli("downsample", cwd=project)
    hr = json.loads((project / "data/hr/manifest.json").read_text())
    for img in hr["images"]:
        width, height = img["size"]
        assert width % 4 == 0 and height % 4 == 0 and max(width, height) <= 1020
    retina = next(i for i in hr["images"] if i["name"] == "retina")
    assert retina["source_size"] == [1411, 1411] and retina["size"] == [1020, 1020]

    out = run_cli("split", cwd=project)
    assert "train 7, val 2, test 2" in out.stdout
    split = json.loads((project / "data/split.json").read_text())
    assert split["counts"] == {"train": 7, "val": 2, "test": 2}
    assert sorted(split["train"] + split["val"] + split["test"]) == sorted(names)

    with sqlite3.connect(project / "mlflow.db") as db:
        stages = {row[0] for row in db.execute("select value from tags where key='stage'")}
    assert stages == {"download", "downsample", "split"}


def test_dir_source_reports_conversions(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder / "nested")
    write_params(project, data__source="dir", data__dir=str(folder), data__patch_size=32)
    run_cli("download", cwd=project)
    raw = json.loads((project / "data/raw/manifest.json").read_text())
    assert len(raw["images"]) == 6 and raw["images"][0]["name"].startswith("nested__")
    out = run_cli("downsample", cwd=project)
    assert "1 grayscale" in out.stdout and "1 palette" in out.stdout
    assert "1 16-bit" in out.stdout and "1 alpha dropped" in out.stdout
    sixteen = read_rgb8(project / "data/hr/nested__sixteen.png")
    assert sixteen.dtype == np.uint8 and sixteen.shape == (40, 56, 3)


def test_a_rotated_camera_jpeg_is_listed_at_its_upright_size(project, tmp_path_factory):
    # a portrait camera photo is stored landscape with EXIF orientation 6; every stage reads it
    # upright, so data/raw/manifest.json's width and height must be the upright ones too
    folder = tmp_path_factory.mktemp("camera")
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(photo(40, 56)).save(folder / "portrait.jpg", exif=exif, quality=95)
    Image.fromarray(photo(40, 56, seed=1)).save(folder / "landscape.jpg", quality=95)
    write_params(project, data__source="dir", data__dir=str(folder), data__patch_size=32)
    run_cli("download", cwd=project)
    raw = {img["name"]: img for img in
           json.loads((project / "data/raw/manifest.json").read_text())["images"]}
    assert (raw["portrait"]["width"], raw["portrait"]["height"]) == (40, 56)
    assert (raw["landscape"]["width"], raw["landscape"]["height"]) == (56, 40)
    for img in raw.values():
        assert read_rgb8(project / "data/raw" / img["file"]).shape == (img["height"],
                                                                        img["width"], 3)


def test_dir_source_with_bad_files_fails_before_writing(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder)
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "empty.jpg").write_bytes(b"")
    png_header_only(folder / "bomb.png", 60_000, 60_000)
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project, check=False)
    assert out.returncode == 2
    assert "3 bad file(s)" in out.stderr
    for name in ("broken.png", "empty.jpg", "bomb.png"):
        assert name in out.stderr
    assert "Traceback" not in out.stderr
    assert not (project / "data").exists() and not (project / "mlflow.db").exists()


def test_dir_source_with_a_broken_symbolic_link_fails_naming_it(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder)
    (folder / "gone.png").symlink_to(folder / "moved" / "gone.png")
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "1 bad file(s)" in out.stderr
    assert f"gone.png: broken symbolic link to {folder / 'moved' / 'gone.png'}; fix or remove " \
        "it" in out.stderr
    assert not (project / "data").exists()  # nothing copied


def test_missing_folder_and_missing_inputs_are_clear(project):
    write_params(project, data__source="dir", data__dir=str(project / "nowhere"))
    out = run_cli("download", cwd=project, check=False)
    assert out.returncode == 2 and "is not a folder" in out.stderr and "nowhere" in out.stderr
    out = run_cli("downsample", cwd=project, check=False)
    assert out.returncode == 2 and "data/raw/manifest.json not found" in out.stderr


@pytest.mark.parametrize("content, problem", [
    ("[]", "expected a mapping with train, val and test lists"),
    ("{}", '"train" must be a non-empty list of image names'),
    ('{"train": ["a"], "val": ["b"], "test": "c"}', '"test" must be a non-empty list'),
    ('{"train": ["a"], "val": ["b"], "test": []}', '"test" must be a non-empty list'),
    ('{"train": ["a", "c"], "val": ["b"], "test": ["c"]}', "'c' is in both train and test"),
])
def test_a_malformed_split_file_is_named(tmp_path, content, problem):
    from srcore.errors import SrcoreError
    from stages.inputs import read_split

    (tmp_path / "split.json").write_text(content)
    with pytest.raises(SrcoreError) as caught:
        read_split(tmp_path / "split.json")
    assert f"split.json is malformed: {problem}" in str(caught.value)
    assert str(caught.value).endswith("; re-run: dvc repro --force split")


def test_stages_refuse_a_malformed_split_before_any_work(project):
    (project / "data").mkdir()
    (project / "data/split.json").write_text('{"train": ["a"], "val": ["b"], "test": []}')
    for command in ("train-cnn", "evaluate-baselines"):
        out = run_cli(command, cwd=project, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert 'data/split.json is malformed: "test" must be a non-empty list' in out.stderr
    assert not (project / "models").exists() and not (project / "metrics").exists()


def test_failed_rerun_keeps_previous_output(project, tmp_path_factory):
    run_cli("download", cwd=project)
    before = sorted(p.name for p in (project / "data/raw").iterdir())
    folder = tmp_path_factory.mktemp("mine")
    (folder / "broken.png").write_bytes(b"junk")
    write_params(project, data__source="dir", data__dir=str(folder))
    assert run_cli("download", cwd=project, check=False).returncode == 2
    assert sorted(p.name for p in (project / "data/raw").iterdir()) == before
    assert [p.name for p in (project / "data").iterdir()] == ["raw"]  # no temp folders left


def test_images_too_small_for_training_or_metrics_are_refused_by_downsample(project,
                                                                          tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    for i in range(5):
        cv2.imwrite(str(folder / f"big{i}.png"), photo(64, 64, seed=i))
    cv2.imwrite(str(folder / "tiny.png"), photo(10, 10))
    cv2.imwrite(str(folder / "thin.png"), photo(24, 200))  # 200x24: too thin for a crop
    write_params(project, data__source="dir", data__dir=str(folder), data__patch_size=32)
    run_cli("download", cwd=project)
    out = run_cli("downsample", cwd=project, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "2 image(s) cannot be used" in out.stderr
    # named as the user's own files, which are the ones to replace
    assert f"{folder / 'tiny.png'} (copied to data/raw/tiny.png): 8x8" in out.stderr
    assert f"{folder / 'thin.png'} (copied to data/raw/thin.png): 200x24" in out.stderr
    assert "smaller than the minimum side of 32 pixels" in out.stderr
    assert not (project / "data/hr").exists()


def test_val_images_too_small_for_the_crop_border_stop_training_before_it_starts(project):
    write_training_data(project, train=2)
    write_params(project, eval__crop_border=30)  # 64x64 images: SSIM-Y needs 11 + 2 x 30
    out = run_cli("train-cnn", cwd=project, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "data/hr/p2.png is 64x64: the metrics need at least 71x71" in out.stderr
    assert "lower eval.crop_border" in out.stderr
    assert not list(project.glob("models/*.pt"))  # models/ holds the stage's lock only


def test_a_truncated_jpeg_in_data_dir_is_named_at_download(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder)
    whole = (folder / "photo.jpg").read_bytes()
    (folder / "photo.jpg").write_bytes(whole[: len(whole) // 2])
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project, check=False)
    assert out.returncode == 2 and "1 bad file(s)" in out.stderr
    assert f"{folder / 'photo.jpg'}: image data is corrupt or truncated" in out.stderr
    assert not (project / "data").exists()


def test_symlinks_leading_out_of_data_dir_are_followed_and_recorded(project, tmp_path_factory):
    folder, elsewhere = tmp_path_factory.mktemp("mine"), tmp_path_factory.mktemp("elsewhere")
    paths = write_modes(elsewhere)
    (folder / "rgb.png").write_bytes(paths["rgb"].read_bytes())
    (folder / "linked.png").symlink_to(paths["gray"])
    (folder / "inside.png").symlink_to(folder / "rgb.png")
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project)
    assert "1 file(s) of data.dir are symbolic links to files outside it" in out.stdout
    raw = {i["name"]: i for i in json.loads((project / "data/raw/manifest.json").read_text())[
        "images"]}
    assert raw["linked"]["link_to"] == str(paths["gray"].resolve())
    assert "link_to" not in raw["rgb"] and "link_to" not in raw["inside"]
    assert (project / "data/raw/linked.png").read_bytes() == paths["gray"].read_bytes()
    assert not (project / "data/raw/linked.png").is_symlink()


def test_evaluate_refuses_baselines_made_for_other_settings(project, weights_dir):
    write_training_data(project, train=1, val=1, test=2)
    (project / "models").mkdir()
    (project / "models/pretrained").symlink_to(weights_dir)
    out = run_cli("evaluate-baselines", cwd=project)
    assert out.stdout.splitlines()[-1] == ("evaluate_baselines: -> metrics/evaluate_baselines"
                                           ".json, metrics/evaluate_baselines_per_image.csv")
    assert "evaluate_baselines: 100%" in out.stderr  # its bar, not evaluate's
    baselines = json.loads((project / "metrics/evaluate_baselines.json").read_text())
    settings = baselines.pop("settings")
    assert len(settings.pop("test_images_sha256")) == 64
    assert settings == {"scale": 4, "lq_kernel": "bicubic", "crop_border": 4,
                        "test_images": ["p2", "p3"]}
    assert list(baselines) == ["nearest", "bilinear", "bicubic"]

    out = run_cli("evaluate", cwd=project, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "models/cnn.pt not found: run the train_cnn stage first" in out.stderr
    for name in ("cnn", "gan"):  # stand-ins: the checks below come before models load
        (project / f"models/{name}.pt").write_bytes(b"")

    write_params(project, eval__crop_border=0)  # by hand, evaluate alone: stale baselines
    out = run_cli("evaluate", cwd=project, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert ("metrics/evaluate_baselines.json was made for other settings (crop_border 4, now 0)"
            ": run `python -m srcore evaluate-baselines`") in out.stderr
    split = json.loads((project / "data/split.json").read_text())
    split["test"] = ["p3"]
    (project / "data/split.json").write_text(json.dumps(split))
    write_params(project)
    out = run_cli("evaluate", cwd=project, check=False)
    assert out.returncode == 2 and "(another test split)" in out.stderr, out.stderr
    split["test"] = ["p2", "p3"]
    (project / "data/split.json").write_text(json.dumps(split))
    write_png(project / "data/hr/p3.png", photo(64, 64, seed=99))  # data/hr made again
    out = run_cli("evaluate", cwd=project, check=False)
    assert out.returncode == 2 and "(the test images in data/hr have changed since)" in out.stderr
    (project / "metrics/evaluate_baselines.json").write_text("{")
    out = run_cli("evaluate", cwd=project, check=False)
    assert out.returncode == 2 and "evaluate_baselines.json is unreadable" in out.stderr
    assert not (project / "metrics/evaluate.json").exists()


def test_an_interrupted_evaluate_leaves_its_outputs_all_old(project, weights_dir):
    """Ctrl-C while the comparison figure was drawn (seconds, after the scores) left the new
    evaluate.json, evaluate_details.json and per-image CSV beside the old figure (or none),
    and the MLflow run said KILLED: a mix of two runs in metrics/."""
    import torch

    from srcore.models.checkpoint import save_generator
    from srcore.models.rrdb import RRDBNet

    write_training_data(project, train=1, val=1, test=2)
    (project / "models").mkdir()
    (project / "models/pretrained").symlink_to(weights_dir)
    for name in ("cnn", "gan"):
        torch.manual_seed(0)
        save_generator(project / f"models/{name}.pt",
                       RRDBNet(rrdb=1, features=8, growth=8).eval())
    run_cli("evaluate-baselines", cwd=project)
    baselines = {p.name: p.read_bytes() for p in (project / "metrics").iterdir()}
    # the signal comes while the figure is drawn, from the CLI's own handler
    patch = ("import os, signal, time\n"
             "import srcore.evaluate\n"
             "def figure(*args, **kwargs):\n"
             "    print('drawing', flush=True)\n"
             "    os.kill(os.getpid(), signal.SIGINT)\n"
             "    time.sleep(60)\n"
             "srcore.evaluate.comparison_figure = figure\n")
    out = run_cli_patched(patch, "evaluate", cwd=project)
    assert "drawing" in out.stdout, out.stderr
    assert out.returncode == 130 and out.stderr.strip().splitlines()[-1] == "interrupted: stopped"
    assert "Traceback" not in out.stderr, out.stderr
    assert {p.name: p.read_bytes() for p in (project / "metrics").iterdir()} == baselines
    with sqlite3.connect(project / "mlflow.db") as db:
        status = db.execute("SELECT r.status FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
                            "WHERE t.key = 'stage' AND t.value = 'evaluate'").fetchall()
    assert status == [("KILLED",)]


@pytest.mark.parametrize("data_dir", ["data", ".", "data/raw/mine"])
def test_a_data_dir_overlapping_the_pipelines_own_folders_is_refused(project, data_dir):
    (project / data_dir).mkdir(parents=True, exist_ok=True)
    write_png(project / data_dir / "mine.png", photo(64, 64))
    write_params(project, data__source="dir", data__dir=data_dir)
    for command in ("check-params", "download"):
        out = run_cli(command, cwd=project, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert f"data.dir={data_dir!r} overlaps data/raw/, which the pipeline writes" in out.stderr
    left = {"data": ["mine.png"], ".": [], "data/raw/mine": ["raw"]}[data_dir]
    assert sorted(p.name for p in (project / "data").glob("*")) == left  # nothing written


def test_a_data_dir_inside_data_but_apart_from_the_outputs_is_used(project):
    for i in range(5):
        write_png(project / "data/photos" / f"p{i}.png", photo(64, 64, seed=i))
    write_params(project, data__source="dir", data__dir="data/photos")
    run_cli("check-params", cwd=project)
    run_cli("download", cwd=project)
    assert len(list((project / "data/raw").glob("*.png"))) == 5


def test_check_params_refuses_a_missing_data_dir_that_download_would_read(project):
    gone = str(project / "nowhere")
    write_params(project, data__source="dir", data__dir=gone)
    out = run_cli("check-params", cwd=project, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"data.dir={gone!r} is not a folder; set data.dir" in out.stderr


def test_a_queued_experiments_copy_without_the_photos_says_how_to_bring_them(project,
                                                                           tmp_path_factory):
    """`dvc exp run --queue` runs in a copy holding only git's files; DVC_ROOT names the
    project, whose git-ignored data/photos has the images."""
    original = tmp_path_factory.mktemp("project")
    for i in range(3):
        write_png(original / "data/photos" / f"p{i}.png", photo(64, 64, seed=i))
    (project / "data/photos").mkdir(parents=True, exist_ok=True)
    write_params(project, data__source="dir", data__dir="data/photos")
    for command in ("check-params", "download"):
        out = run_cli(command, cwd=project, env={"DVC_ROOT": str(original)}, check=False)
        assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
        assert ("data.dir='data/photos' has no images in this experiment's copy" in out.stderr
                and f"dvc exp run --queue -S data.dir={original.resolve() / 'data/photos'}"
                in out.stderr), out.stderr
    assert not (project / "data/raw").exists()
    write_params(project, data__source="dir", data__dir=str(original / "data/photos"))
    run_cli("check-params", cwd=project, env={"DVC_ROOT": str(original)})


def test_hidden_files_and_folders_in_data_dir_are_skipped(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder)
    # macOS's AppleDouble companions (._photo.jpg) are not images; thumbnail caches are
    # not the user's photos
    (folder / "._photo.jpg").write_bytes(b"\x00\x05\x16\x07\x00\x02\x00\x00Mac OS X        ")
    write_png(folder / ".thumbnails" / "rgb.png", photo())
    write_params(project, data__source="dir", data__dir=str(folder))
    run_cli("download", cwd=project)
    raw = json.loads((project / "data/raw/manifest.json").read_text())
    assert sorted(i["name"] for i in raw["images"]) == ["gray", "palette", "photo", "rgb",
                                                         "rgba", "sixteen"]


def test_copies_of_one_photo_under_other_names_are_reported(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    paths = write_modes(folder)
    (folder / "rgb copy.png").write_bytes(paths["rgb"].read_bytes())
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project)
    assert "1 image(s) are byte-identical copies of another" in out.stdout
    assert f"{folder / 'rgb.png'} = {folder / 'rgb copy.png'}" in out.stdout


def test_cmyk_jpeg_conversion_is_reported(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder)
    Image.fromarray(photo()).convert("CMYK").save(folder / "print.jpg", quality=95)
    write_params(project, data__source="dir", data__dir=str(folder), data__patch_size=32)
    run_cli("download", cwd=project)
    out = run_cli("downsample", cwd=project)
    assert "1 CMYK" in out.stdout


def test_decoding_a_folder_of_photos_shows_progress(project, tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder)
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project)
    assert "decode: 100%" in out.stderr and "6/6" in out.stderr


def test_files_of_other_kinds_in_data_dir_are_counted_not_silently_dropped(project,
                                                                           tmp_path_factory):
    folder = tmp_path_factory.mktemp("mine")
    write_modes(folder)
    (folder / "IMG_0001.HEIC").write_bytes(b"heic")
    (folder / "sub").mkdir()
    (folder / "sub" / "IMG_0002.heic").write_bytes(b"heic")
    (folder / "notes.txt").write_text("x")
    (folder / ".DS_Store").write_bytes(b"x")  # hidden: neither used nor counted
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project)
    assert "3 file(s) of other kinds skipped (2 .heic, 1 .txt)" in out.stdout


def test_names_differing_only_in_case_are_refused(project, tmp_path_factory):
    # on macOS and Windows (case-insensitive) the second copy in data/raw would overwrite the
    # first, leaving two manifest entries for one file
    folder = tmp_path_factory.mktemp("mine")
    write_png(folder / "Photo.png", photo(seed=1))
    write_png(folder / "photo.png", photo(seed=2))
    write_params(project, data__source="dir", data__dir=str(folder))
    out = run_cli("download", cwd=project, check=False)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert f"{folder / 'photo.png'}: same name as {folder / 'Photo.png'}" in out.stderr
    assert not (project / "data").exists()
