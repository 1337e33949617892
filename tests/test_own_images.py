"""Predicting your own pictures: MNIST's preprocessing recipe, unreadable files, the table and CSV of
`digitlab predict`, and, on the real MNIST, pictures cut from its test set (inverted, upscaled, in colour)."""

import contextlib
import csv
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms.v2.functional import resize

from conftest import MNIST_DIR, REPO, assert_user_error, requires_mnist, run_digitlab, write_mnist_like
from digitlab.training.callbacks import PredictionWriter
from digitlab.data import MNISTDataModule
from digitlab.data.own_images import ImageError, find_image_files, load_images, read_greyscale, to_mnist
from digitlab.errors import PredictionsNotWritten, SkippedFileWarning, UserError
from digitlab.models.lenet import LeNet5
from filesystems import full_filesystem, tmpfs
from trainer_utils import quiet_trainer

QUIET = ("--trainer.enable_progress_bar", "false", "--trainer.enable_model_summary", "false")


def seven() -> torch.Tensor:
    """A '7' laid out like MNIST: float [28, 28] in [0, 1], white on black, 20 px tall, centred by mass."""
    fine = torch.stack(torch.meshgrid(torch.arange(112.0), torch.arange(112.0), indexing="ij")) / 4 + 0.125
    ink = torch.zeros(112, 112, dtype=torch.bool)
    for (r0, c0), (r1, c1) in [((5.5, 8), (5.5, 20)), ((5.5, 20), (22.5, 12))]:  # bar, then the stem
        start, direction = torch.tensor([r0, c0]), torch.tensor([r1 - r0, c1 - c0])
        t = ((fine - start[:, None, None]) * direction[:, None, None]).sum(0) / direction.square().sum()
        closest = start[:, None, None] + t.clamp(0, 1) * direction[:, None, None]
        ink |= (fine - closest).norm(dim=0) < 1.3
    digit = ink.float().reshape(28, 4, 28, 4).mean(dim=(1, 3))
    centre = [(digit.sum(dim=1 - axis) * torch.arange(28.0)).sum() / digit.sum() for axis in (0, 1)]
    return digit.roll([round(14 - c.item()) for c in centre], dims=(0, 1))


def as_uint8(image: torch.Tensor) -> torch.Tensor:
    return image.mul(255).round().clamp(0, 255).to(torch.uint8)


def save(picture: torch.Tensor, path: Path, **options) -> None:
    """Save a uint8 ``[H, W]``, ``[C, H, W]`` (C = 1, 3 or 4) or float [0, 1] picture; the suffix picks the format."""
    picture = as_uint8(picture) if picture.is_floating_point() else picture
    array = (picture.permute(1, 2, 0) if picture.ndim == 3 else picture[..., None]).numpy()
    Image.fromarray(array[..., 0] if array.shape[-1] == 1 else array).save(path, **options)


def in_a_big_colour_picture(digit: torch.Tensor, ink=(20, 40, 120), paper=(250, 235, 190)) -> torch.Tensor:
    """`digit` scaled ×3 into a 150×120 RGB picture, off-centre, dark ink on light paper: uint8 [3, H, W]."""
    big = resize(digit[None], [84, 84], antialias=True)[0].clamp(0, 1)
    canvas = torch.nn.functional.pad(big, (10, 26, 50, 16))  # left, right, top, bottom
    ink, paper = torch.tensor(ink).view(3, 1, 1), torch.tensor(paper).view(3, 1, 1)
    return as_uint8((paper + (ink - paper) * canvas) / 255)


def close(a: torch.Tensor, b: torch.Tensor) -> float:
    """Mean absolute difference of two uint8 or [0, 1] pictures, in [0, 1]."""
    scale = lambda x: x.float() / 255 if x.dtype == torch.uint8 else x  # noqa: E731
    return (scale(a) - scale(b)).abs().mean().item()


# -- the recipe ------------------------------------------------------------------------------------


def test_an_mnist_digit_comes_back_as_it_was():
    digit = seven()
    assert close(to_mnist(digit), digit) < 0.01


def test_a_big_inverted_colour_picture_comes_back_close_to_the_original(tmp_path):
    digit = seven()
    save(in_a_big_colour_picture(digit), tmp_path / "seven.png")
    save(in_a_big_colour_picture(digit), tmp_path / "seven.jpg", quality=80)
    for name in ("seven.png", "seven.jpg"):
        grey = read_greyscale(tmp_path / name)
        assert grey.shape == (150, 120) and grey.median() > 0.8  # read as it is: dark on light
        result = to_mnist(grey)
        assert result.dtype == torch.uint8 and result.shape == (28, 28)
        assert close(result, digit) < 0.05, name


def test_polarity_is_detected_dark_on_light_or_light_on_dark():
    picture = resize(seven()[None], [60, 45], antialias=True)[0].clamp(0, 1)
    light_on_dark, dark_on_light = to_mnist(picture), to_mnist(1 - picture)
    assert torch.equal(light_on_dark, dark_on_light)
    assert light_on_dark[0].max() == 0 and light_on_dark.max() == 255  # white digit on black, like MNIST


def test_uneven_lighting_is_not_taken_for_ink():
    digit = seven()
    paper = torch.linspace(0.95, 0.55, 28).expand(28, 28)  # light from the left, shadow on the right
    photo = paper * (1 - 0.8 * digit)
    assert close(to_mnist(photo), digit) < 0.03


def test_a_black_digit_on_a_transparent_canvas_is_read_as_on_white(tmp_path):
    canvas = torch.zeros(4, 28, 28, dtype=torch.uint8)  # black everywhere, drawn where opaque
    canvas[3] = as_uint8(seven())
    save(canvas, tmp_path / "canvas.png")
    grey = read_greyscale(tmp_path / "canvas.png")
    assert grey[0, 0] == 1 and close(to_mnist(grey), seven()) < 0.01


def test_a_16_bit_picture_keeps_its_range(tmp_path):
    Image.fromarray((seven() * 65535).round().to(torch.int32).numpy().astype("uint16")).save(tmp_path / "deep.png")
    assert close(read_greyscale(tmp_path / "deep.png"), seven()) < 0.001


def test_a_blank_picture_holds_no_digit():
    with pytest.raises(ImageError, match="blank"):
        to_mnist(torch.full((40, 30), 0.7))


# -- files -----------------------------------------------------------------------------------------


@pytest.fixture
def pictures(tmp_path) -> Path:
    """A folder of two good pictures and four files that are not: empty, text, truncated PNG, blank PNG."""
    folder = tmp_path / "pictures"
    folder.mkdir()
    save(in_a_big_colour_picture(seven()), folder / "10.png")
    save(seven(), folder / "2.png")
    (folder / "empty.png").write_bytes(b"")
    (folder / "notes.txt").write_text("my digits\n")
    (folder / "broken.png").write_bytes((folder / "2.png").read_bytes()[:60])
    save(torch.ones(28, 28), folder / "blank.png")
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "more").mkdir()
    return folder


def test_a_folder_gives_its_files_in_natural_order_without_hidden_ones_or_subfolders(pictures):
    names = [path.name for path in find_image_files(pictures)]
    assert names == ["2.png", "10.png", "blank.png", "broken.png", "empty.png", "notes.txt"]
    assert find_image_files([pictures / "10.png", str(pictures)])[:2] == [pictures / "10.png", pictures / "2.png"]


def test_a_missing_path_is_named(tmp_path):
    with pytest.raises(UserError, match=str(tmp_path / "nowhere")):
        find_image_files([tmp_path / "nowhere"])


def test_unusable_files_are_skipped_with_the_reason(pictures):
    loaded = load_images(pictures)
    assert [Path(name).name for name in loaded.names] == ["2.png", "10.png"]
    assert loaded.images.shape == (2, 28, 28) and loaded.images.dtype == torch.uint8
    reasons = {Path(name).name: reason for name, reason in loaded.skipped}
    assert reasons["empty.png"] == "empty file"
    assert "not a picture" in reasons["notes.txt"]
    assert "unreadable picture" in reasons["broken.png"]
    assert "blank" in reasons["blank.png"]


@pytest.fixture
def odd_pictures(tmp_path) -> Path:
    """Pictures in unusual modes and shapes, and float pictures holding NaN or infinity, next to a plain one."""
    folder = tmp_path / "odd"
    folder.mkdir()
    digit = seven().numpy()
    save(seven(), folder / "plain.png")
    for name, values in {"nan_some.tif": np.where(np.arange(28)[:, None] < 3, np.nan, digit),
                         "nan_all.tif": np.full((28, 28), np.nan), "inf.tif": np.where(digit > 0.5, np.inf, 0)}.items():
        Image.fromarray(values.astype(np.float32), mode="F").save(folder / name)
    Image.fromarray((digit * 65535).astype(np.uint16)).save(folder / "deep.png")
    Image.fromarray(np.full((1, 1), 255, np.uint8)).save(folder / "dot.png")
    Image.fromarray(np.where(np.arange(50) % 9 < 4, 255, 0).astype(np.uint8)[None]).save(folder / "row.png")
    grey = Image.fromarray((digit * 255).astype(np.uint8))
    grey.convert("P").save(folder / "palette.png")
    grey.convert("CMYK").save(folder / "cmyk.tif")
    grey.convert("LA").save(folder / "alpha.png")
    grey.save(folder / "animated.gif", save_all=True, append_images=[Image.new("L", (28, 28))])
    return folder


def test_odd_pictures_are_predicted_or_skipped_with_their_reason(odd_pictures):
    loaded = load_images(odd_pictures)
    read = {Path(name).name: image for name, image in zip(loaded.names, loaded.images)}
    assert sorted(read) == ["alpha.png", "animated.gif", "cmyk.tif", "deep.png", "palette.png", "plain.png"]
    for name, image in read.items():
        assert close(image, seven()) < 0.02, name
    reasons = {Path(name).name: reason for name, reason in loaded.skipped}
    assert reasons == {**dict.fromkeys(["nan_some.tif", "nan_all.tif", "inf.tif"],
                                       "pixel values that are not numbers (NaN) or infinite"),
                       "dot.png": "too small to hold a digit: 1×1 pixels (at least 4 on each side)",
                       "row.png": "too small to hold a digit: 50×1 pixels (at least 4 on each side)"}


@pytest.mark.parametrize("size, named", [((5000, 4000), "5000×4000 pixels"), ((15000, 12000), "more pixels than")])
def test_a_picture_of_too_many_pixels_is_refused_before_it_is_decoded(tmp_path, size, named):
    Image.new("1", size, 1).save(tmp_path / "huge.png")  # a few kB on disk, 20 MP or 180 MP
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Pillow's DecompressionBombWarning included
        with pytest.raises(ImageError, match=f"too large: {named}.* limit of 16,777,216 pixels"):
            read_greyscale(tmp_path / "huge.png")


def test_one_bad_picture_never_stops_the_prediction_of_the_others(tmp_path, odd_pictures, digitlab_main):
    with pytest.warns(SkippedFileWarning) as warned:  # in this process, pytest catches the warnings
        result = digitlab_main("predict", "--model", "centroid", "--data.predict_images", str(odd_pictures), *QUIET,
                               cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"skipped {odd_pictures / 'nan_some.tif'}: pixel values that are not numbers (NaN) or infinite" in [
        str(warning.message) for warning in warned]
    assert [line.split()[0] for line in result.stdout.splitlines()[1:]] == [
        str(odd_pictures / name) for name in ["alpha.png", "animated.gif", "cmyk.tif", "deep.png", "palette.png",
                                              "plain.png"]]


def test_the_example_pictures_are_all_readable():
    loaded = load_images(REPO / "examples" / "digits")
    assert len(loaded.names) == 4 and not loaded.skipped


# -- data module and writer ------------------------------------------------------------------------


def test_the_data_module_serves_your_pictures_without_any_mnist_file(tmp_path, pictures):
    data = MNISTDataModule(data_dir=str(tmp_path / "no-mnist-here"), download=False, predict_images=str(pictures))
    with pytest.warns(SkippedFileWarning) as warned:
        data.setup("predict")
    skipped = ["blank.png", "broken.png", "empty.png", "notes.txt"]
    assert len(warned) == 4 and all(any(name in str(w.message) for w in warned) for name in skipped)
    images, labels = next(iter(data.predict_dataloader()))
    assert images.shape == (2, 28, 28) and labels.tolist() == [-1, -1]
    assert [Path(name).name for name in data.predict_set.names] == ["2.png", "10.png"]


def test_no_readable_picture_is_a_user_error(tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    with pytest.raises(UserError, match="no file found"):
        MNISTDataModule(predict_images=str(folder)).setup("predict")
    (folder / "notes.txt").write_text("my digits\n")
    with pytest.warns(SkippedFileWarning, match="notes.txt"), pytest.raises(UserError, match="none of the 1 files"):
        MNISTDataModule(predict_images=str(folder)).setup("predict")


def test_the_writer_prints_a_row_per_picture_and_writes_the_csv(tmp_path, pictures, capsys):
    data = MNISTDataModule(predict_images=[str(pictures / "10.png"), str(pictures / "2.png")], batch_size=1)
    output = tmp_path / "out" / "predictions.csv"
    quiet_trainer(callbacks=[PredictionWriter(csv=str(output))]).predict(LeNet5(), datamodule=data)
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].split() == ["file", "predicted", "probability"]
    assert [line.split()[0] for line in printed[1:3]] == [str(pictures / "10.png"), str(pictures / "2.png")]
    with output.open() as stream:
        rows = list(csv.DictReader(stream))
    assert [row["file"] for row in rows] == [str(pictures / "10.png"), str(pictures / "2.png")]
    assert all(row["predicted"] in "0123456789" and 0 < float(row["probability"]) <= 1 for row in rows)


def test_the_writer_never_overwrites_a_file(tmp_path):
    (tmp_path / "taken.csv").write_text("precious")
    with pytest.raises(UserError, match="taken.csv"):
        PredictionWriter(csv=str(tmp_path / "taken.csv"))


@pytest.mark.parametrize("place", ["under a file", "a folder", "read-only folder"])
def test_a_csv_that_could_not_be_written_is_refused_before_predicting(tmp_path, pictures, digitlab_main, place):
    (tmp_path / "notes.txt").write_text("a file, not a folder\n")
    (tmp_path / "out").mkdir()
    destination, named = {"under a file": ("notes.txt/p.csv", "notes.txt is a file, not a folder"),
                          "a folder": ("out", "is a folder"),
                          "read-only folder": ("locked/p.csv", "read-only")}[place]
    with contextlib.ExitStack() as mounts:
        if place == "read-only folder":
            mounts.enter_context(tmpfs(tmp_path / "locked", "ro"))
        result = digitlab_main("predict", "--model", "centroid", "--data.predict_images", str(pictures),
                               "--predictions.csv", destination, *QUIET, cwd=tmp_path)
    assert_user_error(result, f"predictions.csv={destination}", named)
    assert "predicted" not in result.stdout  # refused before predicting
    assert (tmp_path / "notes.txt").read_text() == "a file, not a folder\n" and not list((tmp_path / "out").iterdir())


def test_a_csv_that_cannot_be_written_at_the_end_leaves_every_row_printed(tmp_path, pictures, capsys):
    data = MNISTDataModule(data_dir=str(tmp_path / "no-mnist"), predict_images=str(pictures), batch_size=1)
    writer = PredictionWriter(csv=str(tmp_path / "out" / "predictions.csv"), max_rows=0)
    (tmp_path / "out").write_text("made during the run\n")  # the folder to be is now a file
    with pytest.warns(SkippedFileWarning), pytest.raises(PredictionsNotWritten, match="could not be written"):
        quiet_trainer(callbacks=[writer]).predict(LeNet5(), datamodule=data)
    printed = capsys.readouterr().out
    assert str(pictures / "2.png") in printed and str(pictures / "10.png") in printed  # max_rows=0 overridden
    assert (tmp_path / "out").read_text() == "made during the run\n"


def test_predictions_on_a_full_disk_are_printed_and_the_failure_reported(tmp_path, pictures, digitlab_main):
    with full_filesystem(tmp_path / "full") as full:
        result = digitlab_main("predict", "--model", "centroid", "--data.predict_images", str(pictures),
                               "--predictions.csv", str(full / "predictions.csv"), *QUIET, cwd=tmp_path)
        left = sorted(path.name for path in full.iterdir())
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    assert "No space left on device" in result.stderr and "Every prediction is printed instead" in result.stderr
    assert result.stdout.split("\n")[0].split() == ["file", "predicted", "probability"]
    assert str(pictures / "10.png") in result.stdout
    assert left == ["filler"]  # no half-written file


# -- the command -----------------------------------------------------------------------------------


@pytest.mark.slow  # the console script, and DDP's two processes
def test_predict_command_on_pictures_with_a_broken_one_on_one_and_two_processes(tmp_path, pictures):
    data = write_mnist_like(tmp_path / "mnist")
    fit = run_digitlab("fit", "--model", "centroid", "--data.data_dir", str(data), "--data.verify", "false",
                       "--data.val_split", "0",
                       "--trainer.max_epochs", "1", "--test_after_fit", "false", *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    [checkpoint] = (tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")
    predict = ("predict", "--model", "centroid", "--ckpt_path", str(checkpoint), "--data.data_dir",
               str(tmp_path / "no-mnist-here"), "--data.download", "false", "--data.predict_images", str(pictures))

    result = run_digitlab(*predict, "--predictions.csv", "predictions.csv", *QUIET, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert f"digitlab: warning: skipped {pictures / 'broken.png'}: unreadable picture" in result.stderr
    assert f"digitlab: warning: skipped {pictures / 'notes.txt'}: not a picture" in result.stderr
    assert result.stdout.split("\n")[0].split() == ["file", "predicted", "probability"]
    assert str(pictures / "10.png") in result.stdout
    assert len(list(csv.DictReader((tmp_path / "predictions.csv").open()))) == 2

    again = run_digitlab(*predict, "--predictions.csv", "predictions.csv", *QUIET, cwd=tmp_path)
    assert_user_error(again, "predictions.csv", "already exists")

    # Two processes: each predicts one picture; the rows are gathered, printed once, in the same order.
    ddp = run_digitlab(*predict, "--config", str(REPO / "configs/trainer/cpu_ddp.yaml"), "--predictions.csv",
                       "ddp.csv", *QUIET, cwd=tmp_path)
    assert ddp.returncode == 0, ddp.stderr[-3000:]
    assert ddp.stdout.count(str(pictures / "10.png")) == 1
    assert (tmp_path / "ddp.csv").read_text() == (tmp_path / "predictions.csv").read_text()


@requires_mnist
@pytest.mark.e2e
def test_pictures_cut_from_the_mnist_test_set_predict_as_well_as_the_test_set(tmp_path):
    from digitlab.data.files import MNIST_FILES
    from digitlab.data.idx import read_idx

    config = str(REPO / "configs/centroid.yaml")
    fit = run_digitlab("fit", "--config", config, "--data.data_dir", str(MNIST_DIR), *QUIET, cwd=tmp_path)
    assert fit.returncode == 0, fit.stderr[-3000:]
    [checkpoint] = (tmp_path / "lightning_logs" / "version_0" / "checkpoints").glob("*.ckpt")

    # 200 test images as pictures: plain, inverted, 64×64 RGB dark on light, 64×64 RGB light on dark.
    images = read_idx(MNIST_DIR / "t10k-images-idx3-ubyte.gz", MNIST_FILES["test_images"])
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", MNIST_FILES["test_labels"])
    folder, truth = tmp_path / "digits", {}
    folder.mkdir()
    for n, index in enumerate(range(0, 10000, 50)):
        digit = images[index][None]
        if n % 4 == 1:
            digit = 255 - digit
        elif n % 4 >= 2:
            big = resize(digit.float() / 255, [64, 64], antialias=True).clamp(0, 1)
            ink, paper = ((30, 60, 200), (250, 240, 200)) if n % 4 == 2 else ((255, 255, 220), (0, 70, 30))
            ink, paper = torch.tensor(ink).view(3, 1, 1), torch.tensor(paper).view(3, 1, 1)
            digit = as_uint8((paper + (ink - paper) * big) / 255)
        save(digit, folder / f"test_{index:04d}.png")
        truth[str(folder / f"test_{index:04d}.png")] = int(labels[index])
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 40)
    (folder / "readme.txt").write_text("cut from the MNIST test set")

    own = run_digitlab("predict", "--config", config, "--ckpt_path", str(checkpoint), "--data.predict_images",
                       str(folder), "--data.data_dir", str(tmp_path / "no-mnist-here"), "--data.download", "false",
                       "--predictions.csv", "own.csv", *QUIET, cwd=tmp_path)
    assert own.returncode == 0, own.stderr[-3000:]
    assert str(folder / "broken.png") in own.stderr and str(folder / "readme.txt") in own.stderr
    with (tmp_path / "own.csv").open() as stream:
        rows = {row["file"]: int(row["predicted"]) for row in csv.DictReader(stream)}
    assert rows.keys() == truth.keys()
    own_accuracy = sum(rows[name] == label for name, label in truth.items()) / len(truth)

    test = run_digitlab("predict", "--config", config, "--ckpt_path", str(checkpoint), "--data.data_dir",
                        str(MNIST_DIR), "--predictions.csv", "test.csv", *QUIET, cwd=tmp_path)
    assert test.returncode == 0, test.stderr[-3000:]
    assert "Accuracy against the labels: 0.8203 (8203 of 10000 images)" in test.stdout
    with (tmp_path / "test.csv").open() as stream:
        same = [row for row in csv.DictReader(stream) if int(row["index"]) % 50 == 0]
    test_accuracy = sum(row["predicted"] == row["target"] for row in same) / len(same)
    assert own_accuracy >= test_accuracy - 0.02, (own_accuracy, test_accuracy)


def test_declared_pixels_reads_the_header_only():
    from io import BytesIO

    from digitlab.data.own_images import declared_pixels

    stream = BytesIO()
    Image.new("L", (300, 200), 255).save(stream, format="PNG")
    content = stream.getvalue()
    assert declared_pixels(content) == 300 * 200
    assert declared_pixels(b"not a picture") is None and declared_pixels(b"") is None
