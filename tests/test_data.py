"""Data: photo patches from scikit-image, and CIFAR-10, MNIST and image folders read from tiny folders in the real formats."""
import pickle
import re
import struct
import warnings

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from unified_latents.data import (
    CIFAR10_FILES, PHOTOS, DatasetNotFoundError, ImageFolderImages, TensorImages, cifar10_images, crop_plan,
    image_channels, load_image, load_images, load_photo, mnist_images, photo_patches,
)


# ---------------------------------------------------------------- fixtures in the real formats
@pytest.fixture
def cifar_root(tmp_path):
    """A CIFAR-10 python-version folder: 5 pickled training batches of 2 images, a test batch of 3."""
    rng, written = np.random.default_rng(0), {}
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for split, names in CIFAR10_FILES.items():
        arrays = []
        for name in names:
            data = rng.integers(0, 256, (2 if split == "train" else 3, 3072), dtype=np.uint8)
            with open(folder / name, "wb") as file:
                pickle.dump({b"batch_label": name.encode(), b"labels": [1] * len(data), b"data": data,
                             b"filenames": [b"x.png"] * len(data)}, file)
            arrays.append(data)
        written[split] = np.concatenate(arrays)
    return tmp_path, written


def write_idx(path, array, magic):
    path.write_bytes(struct.pack(">I", magic) + b"".join(struct.pack(">I", n) for n in array.shape) + array.tobytes())


@pytest.fixture
def mnist_root(tmp_path):
    """The four uncompressed MNIST idx files under <root>/MNIST/raw: 5 training digits, 2 test digits."""
    rng, raw, written = np.random.default_rng(1), tmp_path / "MNIST" / "raw", {}
    raw.mkdir(parents=True)
    for prefix, split, n in (("train", "train", 5), ("t10k", "heldout", 2)):
        written[split] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        write_idx(raw / f"{prefix}-images-idx3-ubyte", written[split], 0x803)
        write_idx(raw / f"{prefix}-labels-idx1-ubyte", np.arange(n, dtype=np.uint8), 0x801)
    return tmp_path, written


@pytest.fixture
def folder_root(tmp_path):
    """An ImageFolder: two class folders of small PNG and JPEG files, a notes.txt and a corrupt broken.png."""
    rng, paths = np.random.default_rng(2), []
    for cls, shapes in (("cats", [(30, 40), (24, 24), (50, 20)]), ("dogs", [(36, 36), (20, 60)])):
        (tmp_path / cls).mkdir()
        for i, (h, w) in enumerate(shapes):
            path = tmp_path / cls / f"{cls}{i}.{'png' if i % 2 else 'jpg'}"
            Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path)
            paths.append(path)
    Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(tmp_path / "dogs" / "grey.PNG")
    paths.append(tmp_path / "dogs" / "grey.PNG")
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "cats" / "broken.png").write_bytes(rng.bytes(300))
    return tmp_path, sorted(paths)


def check_images(dataset, channels, size):
    batch = torch.stack([dataset[i] for i in range(len(dataset))])
    assert batch.shape == (len(dataset), channels, size, size)
    assert batch.dtype == torch.float32
    assert batch.min() >= -1 and batch.max() <= 1
    assert image_channels(dataset) == channels
    return batch


# ---------------------------------------------------------------- photos
def test_photo_patches_shape_dtype_range():
    patches = photo_patches("train", 32, 64, seed=0)
    assert patches.shape == (64, 3, 32, 32) and patches.dtype == torch.float32
    assert patches.min() >= -1 and patches.max() <= 1 and patches.std() > 0.1
    assert photo_patches("heldout", 48, 5).shape == (5, 3, 48, 48)


def test_photo_patches_deterministic_per_seed():
    a = photo_patches("train", 16, 100, seed=7)
    torch.manual_seed(123)  # the global random state plays no part
    assert torch.equal(a, photo_patches("train", 16, 100, seed=7))
    assert not torch.equal(a, photo_patches("train", 16, 100, seed=8))
    assert not torch.equal(photo_patches("heldout", 16, 100, seed=7), photo_patches("heldout", 16, 100, seed=8))


def test_train_and_heldout_come_from_different_photos():
    assert set(PHOTOS["heldout"]) == {"coffee", "chelsea"}
    assert not set(PHOTOS["train"]) & set(PHOTOS["heldout"])
    assert "cat" not in PHOTOS["train"]  # skimage's cat is chelsea
    for split in ("train", "heldout"):
        plan, patches = crop_plan(split, 20, 60, seed=2), photo_patches(split, 20, 60, seed=2)
        assert set(plan.photo) == set(PHOTOS[split])
        for i in range(60):  # each patch is exactly the planned crop of a photo of its own split
            t, l = int(plan.top[i]), int(plan.left[i])
            crop = load_photo(plan.photo[i])[:, t:t + 20, l:l + 20]
            crop = crop.flip(-1) if plan.flip[i] else crop
            assert torch.equal(patches[i], crop.float() / 127.5 - 1)
    assert not crop_plan("heldout", 20, 200).flip.any() and crop_plan("train", 20, 200).flip.any()


def test_crop_positions_cover_every_valid_crop():
    for split in ("train", "heldout"):
        plan = crop_plan(split, 250, 6000, seed=0)  # about 860 crops per photo for 7 train photos
        for name in set(plan.photo):
            rows = [i for i, p in enumerate(plan.photo) if p == name]
            height, width = load_photo(name).shape[1:]
            assert set(plan.top[rows].tolist()) == set(range(height - 250 + 1))
            assert plan.left[rows].min() == 0 and plan.left[rows].max() == width - 250


@pytest.mark.parametrize("kwargs, message", [
    (dict(split="test"), "split must be one of ('train', 'heldout')"),
    (dict(image_size=0), "image_size must be a positive int"),
    (dict(image_size=16.0), "image_size must be a positive int"),
    (dict(image_size=1000), "image_size must be at most 256"),
    (dict(count=0), "count must be a positive int"),
])
def test_photo_patches_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        photo_patches(**kwargs)


# ---------------------------------------------------------------- CIFAR-10
def test_cifar10_reads_python_batches(cifar_root):
    root, written = cifar_root
    train, heldout = cifar10_images(root, "train"), cifar10_images(str(root), "heldout")
    assert (len(train), len(heldout)) == (10, 3)
    check_images(train, 3, 32)
    pixels = torch.from_numpy(written["heldout"][2].reshape(3, 32, 32)).float() / 127.5 - 1
    assert torch.equal(heldout[2], pixels)
    assert train.images.dtype == torch.uint8  # kept as uint8, converted per item


def test_cifar10_missing_path_names_path_and_layout(tmp_path):
    missing = tmp_path / "no_cifar_here"
    with pytest.raises(DatasetNotFoundError) as info:
        cifar10_images(missing, "train")
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    for part in (str(missing), "cifar-10-batches-py", "data_batch_1", "test_batch", "never downloads"):
        assert part in message, part


def test_cifar10_other_size_refused(cifar_root):
    with pytest.raises(ValueError, match="image_size must be 32 for CIFAR-10"):
        cifar10_images(cifar_root[0], "train", 64)


# ---------------------------------------------------------------- MNIST
def test_mnist_reads_idx_files(mnist_root):
    root, written = mnist_root
    digits = mnist_images(root, "train")
    assert len(digits) == 5
    check_images(digits, 1, 28)
    assert torch.equal(digits[3][0], torch.from_numpy(written["train"][3]).float() / 127.5 - 1)
    padded = mnist_images(root, "heldout", 32)
    batch = check_images(padded, 1, 32)
    assert torch.equal(batch[:, 0, 2:30, 2:30], torch.from_numpy(written["heldout"]).float() / 127.5 - 1)
    border = torch.cat([batch[..., :2, :].flatten(), batch[..., -2:, :].flatten(), batch[..., :2].flatten()])
    assert (border == -1).all()


def test_mnist_missing_path_names_path_and_layout(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        mnist_images(tmp_path / "nowhere", "train")
    message = str(info.value)
    for part in (str(tmp_path / "nowhere"), "MNIST/raw", "train-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                 "never downloads"):
        assert part in message, part


def test_mnist_bad_size(mnist_root):
    with pytest.raises(ValueError, match="image_size must be 28"):
        mnist_images(mnist_root[0], "train", 30)


# ---------------------------------------------------------------- image folders
def test_image_folder_skips_corrupt_file_with_warning(folder_root):
    root, paths = folder_root
    with pytest.warns(UserWarning, match=r"broken\.png") as caught:
        dataset = ImageFolderImages(root, 24)
    assert len(caught) == 1
    assert dataset.files == paths  # notes.txt ignored, broken.png skipped, grey.PNG found
    check_images(dataset, 3, 24)


def test_image_folder_pool_split_is_disjoint(folder_root):
    root, paths = folder_root
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        train, heldout = ImageFolderImages(root, 16, "train"), ImageFolderImages(root, 16, "heldout")
    assert heldout.files == paths[::10] and not set(train.files) & set(heldout.files)
    assert sorted(train.files + heldout.files) == paths


def test_image_folder_split_subfolders(tmp_path):
    for split in ("train", "val"):
        (tmp_path / split / "a").mkdir(parents=True)
        for i in range(2 if split == "train" else 1):
            Image.new("RGB", (20, 30), (i * 100, 0, 0)).save(tmp_path / split / "a" / f"{i}.png")
    assert len(ImageFolderImages(tmp_path, 8, "train")) == 2
    assert len(ImageFolderImages(tmp_path, 8, "heldout")) == 1
    (tmp_path / "val").rename(tmp_path / "elsewhere")
    with pytest.raises(DatasetNotFoundError, match="no heldout folder"):
        ImageFolderImages(tmp_path, 8, "heldout")


def test_image_folder_truncated_image_warns_and_uses_next(tmp_path):
    for i in range(3):
        Image.fromarray(np.full((40, 40, 3), 60 * i, dtype=np.uint8)).save(tmp_path / f"{i}.png")
    dataset = ImageFolderImages(tmp_path, 40)
    data = (tmp_path / "1.png").read_bytes()
    (tmp_path / "1.png").write_bytes(data[:len(data) // 2])
    with pytest.warns(UserWarning, match=r"1\.png: it does not decode"):
        item = dataset[1]
    assert torch.equal(item, dataset[2])


def test_load_image_resizes_shorter_side_and_center_crops(tmp_path):
    image = np.zeros((20, 60, 3), dtype=np.uint8)
    image[:, 20:40] = 255  # a white centre third
    Image.fromarray(image).save(tmp_path / "wide.png")
    out = load_image(tmp_path / "wide.png", 10)
    assert out.shape == (3, 10, 10) and out.dtype == torch.uint8
    assert out[:, :, 3:7].min() > 200  # the centre survives the crop


def test_image_folder_missing_and_empty(tmp_path):
    with pytest.raises(DatasetNotFoundError) as info:
        ImageFolderImages(tmp_path / "absent", 32)
    assert str(tmp_path / "absent") in str(info.value) and "<class>/<image>" in str(info.value)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("nothing")
    with pytest.raises(DatasetNotFoundError, match="no readable images"):
        ImageFolderImages(tmp_path / "empty", 32)


# ---------------------------------------------------------------- the entry point
def test_load_images_photos_defaults_and_loader():
    train = load_images("photos", "train", 32)
    assert isinstance(train, TensorImages) and len(train) == 4096 and image_channels(train) == 3
    assert len(load_images("photos", "heldout", 32)) == 512
    batch = next(iter(DataLoader(train, batch_size=16, shuffle=False)))
    assert batch.shape == (16, 3, 32, 32) and batch.dtype == torch.float32
    assert torch.equal(load_images("photos", "heldout", 16, count=8, seed=3)[5], photo_patches("heldout", 16, 8, seed=3)[5])


def test_load_images_every_dataset(cifar_root, mnist_root, folder_root):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for name, root, size, channels in (("cifar10", cifar_root[0], 32, 3), ("mnist", mnist_root[0], 32, 1),
                                           ("imagefolder", folder_root[0], 20, 3)):
            for split in ("train", "heldout"):
                check_images(load_images(name, split, size, root=root), channels, size)
    subset = load_images("cifar10", "train", 32, root=cifar_root[0], count=4, seed=0)
    assert len(subset) == 4 and image_channels(subset) == 3
    again = load_images("cifar10", "train", 32, root=cifar_root[0], count=4, seed=0)
    assert subset.indices == again.indices


@pytest.mark.parametrize("kwargs, error, message", [
    (dict(name="imagenet", split="train", image_size=32), ValueError, "name must be one of ('photos', 'cifar10', 'mnist', 'imagefolder')"),
    (dict(name="photos", split="valid", image_size=32), ValueError, "split must be one of ('train', 'heldout')"),
    (dict(name="mnist", split="train", image_size=28), ValueError, "root must be the local folder that holds mnist"),
    (dict(name="photos", split="train", image_size=-4), ValueError, "image_size must be a positive int"),
    (dict(name="cifar10", split="train", image_size=28, root="/x"), ValueError, "image_size must be 32 for CIFAR-10"),
    (dict(name="cifar10", split="heldout", image_size=32, root="/no/such/dir"), DatasetNotFoundError,
     "CIFAR-10 not found at /no/such/dir: expected /no/such/dir/cifar-10-batches-py/data_batch_1"),
    (dict(name="mnist", split="train", image_size=28, root="/no/such/dir"), DatasetNotFoundError,
     "MNIST not found at /no/such/dir: expected the four uncompressed idx files /no/such/dir/MNIST/raw/"),
    (dict(name="imagefolder", split="train", image_size=28, root="/no/such/dir"), DatasetNotFoundError,
     "image folder not found at /no/such/dir: expected /no/such/dir/<class>/<image>"),
])
def test_load_images_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        load_images(**kwargs)


def test_load_images_count_too_large(mnist_root):
    with pytest.raises(ValueError, match="count must be at most the 5 images"):
        load_images("mnist", "train", 28, root=mnist_root[0], count=6)
