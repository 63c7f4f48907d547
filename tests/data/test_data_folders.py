import io
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader, Subset

from mimlens.data.folders import ImageFiles, PhotoCrops, build_dataset, skipped_message
from mimlens.data.photos import PHOTO_NAMES, load_photos, photos, procedural_texture
from mimlens.data.synthetic import SyntheticScenes
from mimlens.data.transforms import IMAGENET_MEAN, IMAGENET_STD, eval_transform, train_transform
from mimlens.errors import MimlensError


def _png(path, colour, size=(20, 16)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path)


def _truncated_png(path):
    buffer = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 40, 3), dtype=np.uint8)).save(buffer, "PNG")
    path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])


@pytest.fixture
def tree(tmp_path):
    _png(tmp_path / "cat" / "a.png", (255, 0, 0))
    _png(tmp_path / "cat" / "b.png", (250, 0, 0))
    _png(tmp_path / "dog" / "c.png", (0, 0, 255))
    (tmp_path / "dog" / "garbage.jpg").write_bytes(b"not an image at all")
    _truncated_png(tmp_path / "dog" / "truncated.png")
    (tmp_path / "dog" / "notes.txt").write_text("ignored: not an image extension")
    return tmp_path


def test_image_folder_skips_and_counts_unreadable_files(tree):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # skipped files are reported by skipped_message, never warned about
        data = ImageFiles(tree, eval_transform(8, mean=None))
        batches = list(DataLoader(data, batch_size=2))
    labels = [label for batch in batches for label in batch["label"].tolist()]
    indices = [index for batch in batches for index in batch["index"].tolist()]
    assert data.classes == ["cat", "dog"] and data.num_classes == 2
    assert len(data) == 5  # listed, not decoded: every image file counts
    # dog/garbage.jpg (3) and dog/truncated.png (4) are each replaced by the next readable file, cat/a.png (0)
    assert indices == [0, 1, 2, 0, 0] and labels == [0, 0, 1, 0, 0]
    assert [(Path(p).name, reason) for p, reason in data.skipped] == [("garbage.jpg", "not an image"),
                                                                      ("truncated.png", "truncated")]
    assert skipped_message(data) == (f"skipped 2 unreadable file(s) in {tree}: dog/garbage.jpg (not an image), "
                                     "dog/truncated.png (truncated)")


def test_image_folder_labels_and_pixels(tree):
    data = ImageFiles(tree, eval_transform(8, mean=None))
    first, third = data[0], data[2]
    assert first["image"].shape == (3, 8, 8) and first["image"].dtype == torch.float32
    assert torch.allclose(first["image"][0], torch.ones(8, 8)) and first["label"] == 0
    assert torch.allclose(third["image"][2], torch.ones(8, 8)) and third["label"] == 1


def _jpeg(path, seed, keep=1.0):
    buffer = io.BytesIO()
    pixels = np.random.default_rng(seed).integers(0, 255, (48, 40, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(buffer, "JPEG", quality=90)
    path.write_bytes(buffer.getvalue()[: int(len(buffer.getvalue()) * keep)])


@pytest.fixture
def five_and_a_truncated_jpeg(tmp_path):
    for k in range(3):
        _png(tmp_path / f"p{k}.png", (40 * k, 0, 0))
    _jpeg(tmp_path / "j0.jpg", 0)
    _jpeg(tmp_path / "j1.jpeg", 1)
    _jpeg(tmp_path / "broken.jpg", 2, keep=0.5)
    with Image.open(tmp_path / "broken.jpg") as image:
        assert image.size == (40, 48)  # its header alone reads fine
    return tmp_path


def test_truncated_jpeg_is_skipped_once_counted_once_reported_once(five_and_a_truncated_jpeg):
    root = five_and_a_truncated_jpeg
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = build_dataset(root, img_size=16)
        seen = [i for _ in range(2) for batch in DataLoader(data, batch_size=4) for i in batch["index"].tolist()]
    assert list(data.files) == ["broken.jpg", "j0.jpg", "j1.jpeg", "p0.png", "p1.png", "p2.png"]
    assert len(data) == 6 and seen == [1, 1, 2, 3, 4, 5] * 2  # broken.jpg (0) gives the next file, in each epoch
    assert data.skipped == [(str(root / "broken.jpg"), "truncated")]  # met twice, recorded once
    message = f"skipped 1 unreadable file(s) in {root}: broken.jpg (truncated)"
    assert skipped_message(data) == message
    assert skipped_message(Subset(Subset(data, range(3)), [0])) == message  # the same line through subsets


def test_first_readable_leaves_out_a_truncated_jpeg_and_records_it_once(five_and_a_truncated_jpeg):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        data = ImageFiles(five_and_a_truncated_jpeg)
        assert len(data) == 6 and skipped_message(data) is None  # nothing decoded yet
        assert data.first_readable(3) == [1, 2, 3] and data.first_readable(9) == [1, 2, 3, 4, 5]
        assert [data[0]["index"].item() for _ in range(3)] == [1] * 3  # the next readable image
    assert [Path(p).name for p, _ in data.skipped] == ["broken.jpg"]


def test_photo_crops_need_no_skipping():
    assert skipped_message(PhotoCrops(2, 8)) is None


def test_flat_folder_is_unlabelled(tmp_path):
    for k in range(3):
        _png(tmp_path / f"{k}.png", (k, k, k))
    _png(tmp_path / "sub" / "x.png", (0, 0, 0))  # a flat folder lists its own images only
    data = ImageFiles(tmp_path)
    assert len(data) == 3 and data.num_classes == 0
    assert data[1]["label"] == -1 and isinstance(data[1]["image"], Image.Image)


def test_missing_and_empty_folders_raise(tmp_path):
    with pytest.raises(MimlensError, match="does not exist"):
        ImageFiles(tmp_path / "nope")
    with pytest.raises(MimlensError, match="holds no image"):
        ImageFiles(tmp_path)
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "readme.txt").write_text("x")
    with pytest.raises(MimlensError, match="holds no image"):
        ImageFiles(tmp_path)


def test_build_dataset_specs(tmp_path):
    data = build_dataset("synthetic:5", img_size=32, split="val", seed=1, num_objects=(1, 1))
    assert isinstance(data, SyntheticScenes) and len(data) == 5 and data.split == "val"
    assert data[0]["image"].shape == (3, 32, 32) and data.difficulty.num_objects == (1, 1)
    from mimlens.tasks.datasets import synthetic_count

    assert len(build_dataset("synthetic")) == synthetic_count("synthetic") == 2048  # one meaning in every reader
    crops = build_dataset("photos:3", img_size=16)
    assert isinstance(crops, PhotoCrops) and len(crops) == 3 and crops[2]["image"].shape == (3, 16, 16)
    _png(tmp_path / "train" / "a" / "x.png", (0, 255, 0))
    _png(tmp_path / "val" / "a" / "y.png", (0, 255, 0))
    _png(tmp_path / "val" / "b" / "z.png", (0, 255, 0))
    val = build_dataset(tmp_path, img_size=12, split="val")
    assert len(val) == 2 and val[1]["image"].shape == (3, 12, 12) and val[1]["label"] == 1
    assert len(build_dataset(tmp_path / "train", split="val")) == 1  # no val/ inside: the folder itself
    assert build_dataset(tmp_path, img_size=(12, 20), split="val")[0]["image"].shape == (3, 12, 20)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        ("synthetic:abc", "synthetic:N"),
        ("synthetic:0", "positive"),
        ("photos:-2", "photos:N"),
        ("/no/such/dir", "neither"),
    ],
)
def test_build_dataset_bad_specs(spec, words):
    with pytest.raises(MimlensError, match=words):
        build_dataset(spec)


def test_photo_crops_are_deterministic_and_in_range():
    first, second = PhotoCrops(6, 24, seed=2), PhotoCrops(6, 24, seed=2)
    for i in range(6):
        assert torch.equal(first[i]["image"], second[i]["image"])
        assert 0 <= first[i]["image"].min() and first[i]["image"].max() <= 1
        assert 0 <= first[i]["label"] < len(photos())
    assert not torch.equal(first[0]["image"], PhotoCrops(6, 24, seed=2, split="val")[0]["image"])
    assert PhotoCrops(2, (12, 20))[1]["image"].shape == (3, 12, 20)


def test_bundled_photos_load_without_download():
    loaded = load_photos()
    assert set(loaded) == set(PHOTO_NAMES)
    for photo in loaded.values():
        assert photo.dtype == np.float32 and photo.ndim == 3 and photo.shape[2] == 3
        assert photo.min() >= 0 and photo.max() <= 1 and photo.std() > 0.05
    camera = loaded["camera"]
    assert np.array_equal(camera[..., 0], camera[..., 2]), "the grey photo is repeated over channels"


def test_procedural_texture():
    one = procedural_texture(16, 24, np.random.default_rng(4))
    assert one.shape == (16, 24, 3) and one.dtype == np.float32 and 0 <= one.min() and one.max() <= 1
    assert np.array_equal(one, procedural_texture(16, 24, np.random.default_rng(4)))


def test_eval_transform_normalises_with_imagenet_statistics():
    image = Image.new("RGB", (40, 30), (255, 128, 0))
    out = eval_transform(16)(image)
    assert out.shape == (3, 16, 16) and type(out) is torch.Tensor
    expected = (torch.tensor([1.0, 128 / 255, 0.0]) - torch.tensor(IMAGENET_MEAN)) / torch.tensor(IMAGENET_STD)
    assert torch.allclose(out.mean((1, 2)), expected, atol=1e-5)


def test_train_transform_crops_and_flips():
    image = torch.rand(3, 16, 16)
    same = train_transform(16, scale=(1.0, 1.0), ratio=(1.0, 1.0), hflip=1.0, mean=None)(image)
    assert torch.allclose(same, image.flip(2))
    out = train_transform(8)(Image.new("RGB", (32, 20), (10, 20, 30)))
    assert out.shape == (3, 8, 8) and out.dtype == torch.float32


def test_missing_photo_is_left_out_with_a_warning(monkeypatch):
    from mimlens.data import photos as photos_module

    files = dict(photos_module.PHOTO_FILES, missing=("skimage", "data/no_such_photo.png"))
    monkeypatch.setattr(photos_module, "PHOTO_FILES", files)
    with pytest.warns(UserWarning, match="'missing' could not be loaded"):
        loaded = photos_module.load_photos.__wrapped__()
    assert "missing" not in loaded and "astronaut" in loaded


def test_procedural_textures_replace_photos_when_none_load(monkeypatch):
    from mimlens.data import photos as photos_module

    monkeypatch.setattr(photos_module, "load_photos", dict)
    fallback = photos_module.photos.__wrapped__()
    assert len(fallback) == 8 and all(t.shape == (512, 512, 3) and t.dtype == np.float32 for t in fallback)


def test_splits_of_a_tree_share_one_class_list(tmp_path):
    _png(tmp_path / "train" / "apple" / "a.png", (255, 0, 0))
    _png(tmp_path / "train" / "coffee" / "b.png", (0, 0, 255))
    _png(tmp_path / "val" / "coffee" / "c.png", (0, 0, 250))
    _png(tmp_path / "val" / "durian" / "d.png", (0, 250, 0))
    train, val = (build_dataset(tmp_path, img_size=8, split=split) for split in ("train", "val"))
    assert train.classes == val.classes == ["apple", "coffee", "durian"]
    assert train.labels.tolist() == [0, 1] and val.labels.tolist() == [1, 2]
    with pytest.raises(MimlensError, match="class folder.s. durian are not among the tree's classes"):
        ImageFiles(tmp_path / "val", classes=["apple", "coffee"])
