import gzip
import json
import pickle
import tarfile
import warnings

import numpy as np
import pytest
from PIL import Image

from conftest import shared_data_or_skip
from jaxhash import data as jdata
from jaxhash.data import DatasetNotFoundError, load_dataset, load_image_folder, retrieval_split, to_features
from jaxhash.data import folders
from jaxhash.data.idx import read_idx
from jaxhash.images import MixedSizesError
from jaxhash.data.source import source_from_json, source_from_legacy_metadata, source_to_json


def write_idx(path, array):
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    raw = header + array.astype(np.uint8).tobytes()
    if path.suffix == ".gz":
        raw = gzip.compress(raw)
    path.write_bytes(raw)


def make_idx_folder(folder, rng, n_train=30, n_test=10):
    folder.mkdir(parents=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (n, 28, 28)))
        write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(n) % 10)


def test_read_idx_plain_and_gzip(tmp_path, rng):
    a = rng.integers(0, 256, (4, 3, 2))
    for name in ("x.idx", "x.idx.gz"):
        write_idx(tmp_path / name, a)
        np.testing.assert_array_equal(read_idx(tmp_path / name), a)
    (tmp_path / "bad").write_bytes(b"\x01\x02\x03\x04")
    with pytest.raises(ValueError, match="not an IDX"):
        read_idx(tmp_path / "bad")
    write_idx(tmp_path / "t.idx", a)
    (tmp_path / "t.idx").write_bytes((tmp_path / "t.idx").read_bytes()[:-5])
    with pytest.raises(ValueError, match="truncated"):
        read_idx(tmp_path / "t.idx")


def test_named_dataset_found_in_data_dir_and_env(tmp_path, rng, monkeypatch):
    make_idx_folder(tmp_path / "fashion-mnist", rng)
    ds = load_dataset("fashion-mnist", data_dir=tmp_path)
    assert ds.x_train.shape == (30, 28, 28, 1) and ds.x_test.shape == (10, 28, 28, 1)
    assert ds.class_names[0] == "T-shirt/top"
    monkeypatch.setenv("JAXHASH_DATA", str(tmp_path))
    assert load_dataset("fashion-mnist").x_train.shape[0] == 30


def test_missing_dataset_says_how_to_get_it(tmp_path, monkeypatch):
    monkeypatch.delenv("JAXHASH_DATA", raising=False)
    monkeypatch.setitem(jdata.KNOWN_DATASETS, "fashion-mnist", (["fashion-mnist"], [], jdata.KNOWN_DATASETS["fashion-mnist"][2]))
    with pytest.raises(DatasetNotFoundError, match="apt-get install -y dataset-fashion-mnist"):
        load_dataset("fashion-mnist", data_dir=tmp_path)
    with pytest.raises(DatasetNotFoundError, match="neither a known data set"):
        load_dataset(str(tmp_path / "nowhere"))


def test_cifar_pickle_batches(tmp_path, rng):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        batch = {b"data": rng.integers(0, 256, (4, 3072)).astype(np.uint8), b"labels": [0, 1, 2, 3]}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a", b"b", b"c", b"d"]}))
    ds = load_dataset(str(tmp_path))
    assert ds.x_train.shape == (20, 32, 32, 3) and ds.x_test.shape == (4, 32, 32, 3)
    assert ds.class_names == ("a", "b", "c", "d")
    raw = pickle.loads((folder / "test_batch").read_bytes())[b"data"][0]
    np.testing.assert_array_equal(ds.x_test[0, :, :, 0].ravel(), raw[:1024])  # channel-major -> HWC


def test_cifar100_pickle_batches(tmp_path, rng):
    folder = tmp_path / "cifar100" / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n in (("train", 6), ("test", 3)):
        batch = {b"data": rng.integers(0, 256, (n, 3072)).astype(np.uint8), b"fine_labels": list(range(n)), b"coarse_labels": [0] * n}
        (folder / name).write_bytes(pickle.dumps(batch))
    (folder / "meta").write_bytes(pickle.dumps({b"fine_label_names": [f"c{i}".encode() for i in range(100)]}))
    ds = load_dataset("cifar100", data_dir=tmp_path)
    assert ds.x_train.shape == (6, 32, 32, 3) and ds.y_test.tolist() == [0, 1, 2] and len(ds.class_names) == 100


def make_image_tree(root, rng, per_class=4):
    for split in ("train", "test"):
        for cls in ("cat", "dog"):
            d = root / split / cls
            d.mkdir(parents=True)
            for i in range(per_class):
                Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(d / f"{i}.png")
    (root / "train" / "cat" / "broken.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (root / "train" / "notes.txt").write_text("hello")


def test_image_folder_and_tar_gz_agree_and_skip_bad_files(tmp_path, rng):
    root = tmp_path / "pets"
    make_image_tree(root, rng)
    with pytest.warns(UserWarning, match=r"skipped 2 .*broken\.jpg"):
        sets = load_image_folder(root, progress=False)
    assert sets["train"].images.shape == (8, 8, 8, 3) and sets["test"].labels.tolist() == [0] * 4 + [1] * 4
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    with pytest.warns(UserWarning, match="skipped 2"):
        from_tar = load_image_folder(archive, progress=False)
    np.testing.assert_array_equal(from_tar["train"].images, sets["train"].images)
    assert from_tar["train"].paths == sets["train"].paths


def test_a_class_that_is_not_one_folder_is_noted(tmp_path, rng):
    root = tmp_path / "photos"
    for folder in ("lion/2019", "ox/2019", "monarch", "monarch/more", "bee"):
        (root / folder).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(root / folder / "x.png")
    with pytest.warns(UserWarning) as caught:
        sets = load_image_folder(root, progress=False)
    assert sets["all"].class_names == ("2019", "bee", "monarch", "more")  # the class is the folder's name, as before
    note = "\n".join(str(w.message) for w in caught)
    assert "the folders lion/2019, ox/2019 are one class, '2019', by their name" in note
    assert "monarch/more is a class of its own, inside another class's folder" in note
    assert "rename or move folders if that is not what you meant" in note
    split = tmp_path / "split"
    for folder in ("train/cat", "test/cat", "train/cat/kittens", "train/dog", "test/dog"):
        (split / folder).mkdir(parents=True)
        Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(split / folder / "x.png")
    with pytest.warns(UserWarning) as caught:
        dataset = load_dataset(str(split))
    note = "\n".join(str(w.message) for w in caught)
    assert "train/cat/kittens is a class of its own, inside another class's folder" in note
    assert "1 image outside the train and test folders is left out (e.g. train/cat/kittens/x.png)" in note
    assert len(dataset.y_train) == 2 and len(dataset.y_test) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # train/cat and test/cat are one class in two splits: nothing to say
        make_image_tree(tmp_path / "pets", rng)
        (tmp_path / "pets" / "train" / "cat" / "broken.jpg").unlink()
        (tmp_path / "pets" / "train" / "notes.txt").unlink()
        assert load_image_folder(tmp_path / "pets", progress=False)["test"].class_names == ("cat", "dog")


def test_image_folder_resizes_and_converts(tmp_path, rng):
    root = tmp_path / "imgs" / "a"
    root.mkdir(parents=True)
    Image.fromarray(rng.integers(0, 256, (10, 12, 3)).astype(np.uint8)).save(root / "x.png")
    Image.fromarray(rng.integers(0, 256, (20, 5)).astype(np.uint8)).save(root / "y.png")
    with pytest.raises(ValueError, match=r"different sizes: 10x12 \(1 image\), 20x5 \(1 image\).*--image-size 10x12.*image_size=\(10, 12\) when loading"):
        load_image_folder(tmp_path / "imgs", progress=False)
    sets = load_image_folder(tmp_path / "imgs", image_size=(28, 28), channels=1, progress=False)
    assert sets["all"].images.shape == (2, 28, 28, 1)


def test_mixed_sizes_can_go_to_the_most_common_decoding_each_file_once(tmp_path, rng, monkeypatch):
    root = tmp_path / "shots"
    for cls, sizes in (("a", [(6, 8), (6, 8), (12, 5)]), ("b", [(6, 8), (9, 9)])):
        (root / cls).mkdir(parents=True)
        for i, size in enumerate(sizes):
            Image.fromarray(rng.integers(0, 256, size + (3,)).astype(np.uint8)).save(root / cls / f"{i}.png")
    archive = tmp_path / "shots.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    decoded = []
    real_decode = folders.decode_image
    monkeypatch.setattr(folders, "decode_image", lambda *a, **k: decoded.append(1) or real_decode(*a, **k))
    monkeypatch.setenv("JAXHASH_CACHE", str(tmp_path / "cache"))
    with pytest.raises(MixedSizesError, match="6x8 \\(3 images\\)"):
        load_dataset(str(root), progress=False)
    for source in (root, archive, archive):  # the second archive load comes from the cache
        decoded.clear()
        with pytest.warns(UserWarning, match=r"3 different sizes: all are resized to the most common, 6x8 \(3 of 5"):
            ds = load_dataset(str(source), progress=False, mixed_sizes="most common")
        assert ds.x_train.shape == (5, 6, 8, 3) and ds.y_train.tolist() == [0, 0, 0, 1, 1]
        assert len(decoded) == 5 if source is root else len(decoded) in (0, 5)
    assert len(decoded) == 0  # served by the cache, and its note told again
    with pytest.raises(MixedSizesError):  # the resized cache entry never serves a load that refuses mixed sizes
        load_dataset(str(archive), progress=False)
    asked = load_dataset(str(root), progress=False, image_size=(20, 20), mixed_sizes="most common")
    decoded.clear()
    once = load_dataset(str(root), progress=False, image_size=(20, 20))  # a size asked for: every image resized once
    np.testing.assert_array_equal(asked.x_train, once.x_train)
    assert len(decoded) == 5  # a folder is decoded once, resized while decoding (never all at full size first)
    Image.fromarray(rng.integers(0, 256, (7, 7, 4)).astype(np.uint8)).save(root / "b" / "2.png")  # transparent, new size
    with tarfile.open(tmp_path / "alpha.tar.gz", "w:gz") as tar:
        tar.add(root, arcname=".")
    for source in (root, tmp_path / "alpha.tar.gz"):  # an archive is read twice (own size, refused; then resized)
        with pytest.warns(UserWarning, match="dropped the transparency") as caught:
            from_source = load_dataset(str(source), progress=False, image_size=(20, 20))
        assert sum("transparency" in str(w.message) for w in caught) == 1, [str(w.message) for w in caught]
        np.testing.assert_array_equal(from_source.x_train[:5], once.x_train)
    (root / "b" / "2.png").unlink()
    (root / "b" / "1.png").unlink()
    (root / "a" / "2.png").unlink()  # now one size: one cache entry serves both modes
    with tarfile.open(tmp_path / "even.tar.gz", "w:gz") as tar:
        tar.add(root, arcname=".")
    decoded.clear()
    even = load_dataset(str(tmp_path / "even.tar.gz"), progress=False, mixed_sizes="most common")
    assert len(decoded) == 3 and even.x_train.shape == (3, 6, 8, 3)
    np.testing.assert_array_equal(load_dataset(str(tmp_path / "even.tar.gz"), progress=False).x_train, even.x_train)
    assert len(decoded) == 3  # read from the cache the first load wrote
    with pytest.raises(ValueError, match="mixed_sizes must be 'refuse' or 'most common'"):
        load_dataset(str(root), mixed_sizes="largest")


@pytest.mark.parametrize("modes", [["RGB"] * 4, ["L"] * 5 + ["RGB"] * 3, ["RGB"] * 5 + ["L"] * 3])
@pytest.mark.parametrize("mixed_sizes", [False, True])
def test_a_folder_and_its_archive_give_the_same_pixels_at_a_size_asked_for(tmp_path, rng, modes, mixed_sizes, monkeypatch):
    monkeypatch.setenv("JAXHASH_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "pics"
    for i, mode in enumerate(modes):
        (root / f"c{i % 2}").mkdir(parents=True, exist_ok=True)
        size = (80, 72) if mixed_sizes and i == len(modes) - 1 else (96, 88)
        Image.fromarray(rng.integers(0, 256, size + (3,)).astype(np.uint8)).convert(mode).save(root / f"c{i % 2}" / f"{i}.png")
    archive = tmp_path / "pics.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the note on converted images
        from_folder = load_dataset(str(root), progress=False, image_size=(40, 36))
        from_archive = load_dataset(str(archive), progress=False, image_size=(40, 36))
    assert from_folder.x_train.shape == (len(modes), 40, 36, 1 if modes.count("L") > len(modes) // 2 else 3)
    # converted, then resized, either way, and made grey to the same level by Pillow and by conform_images
    np.testing.assert_array_equal(from_folder.x_train, from_archive.x_train)


def test_mixed_grey_and_colour_go_to_the_majority_with_one_note(tmp_path, rng):
    for cls, modes in (("a", ["RGB", "RGB", "L"]), ("b", ["RGB", "RGBA"])):
        (tmp_path / "mix" / cls).mkdir(parents=True)
        for i, mode in enumerate(modes):
            Image.fromarray(rng.integers(0, 256, (6, 6, 3)).astype(np.uint8)).convert(mode).save(tmp_path / "mix" / cls / f"{i}.png")
    with pytest.warns(UserWarning, match=r"converted 1 grey image to RGB \(4 of 5 images are RGB\)") as caught:
        sets = load_image_folder(tmp_path / "mix", progress=False)
    assert len(caught) == 1 and sets["all"].images.shape == (5, 6, 6, 3)
    grey_only = load_image_folder(tmp_path / "mix", channels=1, progress=False)
    assert grey_only["all"].images.shape == (5, 6, 6, 1)


def test_a_folder_with_transparent_images_says_so_once(tmp_path, rng):
    (tmp_path / "icons" / "a").mkdir(parents=True)
    for i in range(3):
        rgba = rng.integers(0, 256, (6, 6, 4)).astype(np.uint8)
        rgba[..., 3] = 255 if i == 0 else 0  # the first is opaque: nothing is lost there
        Image.fromarray(rgba).save(tmp_path / "icons" / "a" / f"{i}.png")
    with pytest.warns(UserWarning, match=r"dropped the transparency \(alpha channel\) of 2 images") as caught:
        sets = load_image_folder(tmp_path / "icons", progress=False)
    assert len(caught) == 1 and sets["all"].images.shape == (3, 6, 6, 3)


def test_load_dataset_resizes_on_request(tmp_path, rng):
    make_idx_folder(tmp_path / "mnist", rng)
    ds = load_dataset("mnist", data_dir=tmp_path, image_size=(14, 10))
    assert ds.x_train.shape == (30, 14, 10, 1) and ds.x_test.shape == (10, 14, 10, 1)
    with pytest.raises(ValueError, match="image height must be a positive integer"):
        load_dataset("mnist", data_dir=tmp_path, image_size=(0, 10))


def test_sources_round_trip_and_give_images_and_classes(tmp_path, rng):
    root = tmp_path / "pets"
    make_image_tree(root, rng)
    with pytest.warns(UserWarning):
        sets = load_image_folder(root, progress=False)
    paths = sets["train"].paths + sets["test"].paths
    folder = jdata.FolderSource(str(root), paths)
    assert source_from_json(json.loads(json.dumps(source_to_json(folder)))) == folder
    entries = jdata.source_entries(folder, [0, 5, 99])
    assert entries.classes == ["cat", "dog", None] and entries.class_names == {"cat", "dog"}
    np.testing.assert_array_equal(entries.images[1], sets["train"].images[5])
    assert entries.images[2] is None
    assert jdata.source_entries(folder, [0], images=False).images == [None]
    archive = tmp_path / "pets.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    from_tar = jdata.source_entries(jdata.FolderSource(str(archive), paths), [5])
    np.testing.assert_array_equal(from_tar.images[0], sets["train"].images[5])
    moved = jdata.source_entries(jdata.FolderSource(str(tmp_path / "gone"), paths), [5])
    assert moved.images == [None] and moved.classes == ["dog"]


def test_dataset_source_reads_the_same_part(tmp_path, rng):
    make_idx_folder(tmp_path / "mnist", rng, n_train=40, n_test=20)
    src = jdata.DatasetSource("mnist", str(tmp_path), "database", "10", 3)
    assert source_from_json(source_to_json(src)) == src
    split = retrieval_split(load_dataset("mnist", data_dir=tmp_path), "10", seed=3)
    entries = jdata.source_entries(src, [0, 7])
    np.testing.assert_array_equal(entries.images[1], split.db_x[7])
    assert entries.classes == [str(split.db_y[0]), str(split.db_y[7])]
    with pytest.raises(ValueError, match="needs a retrieval protocol"):
        source_to_json(jdata.DatasetSource("mnist", None, "query"))
    with pytest.raises(ValueError, match="unknown image source kind"):
        source_from_json({"kind": "web"})
    assert source_from_legacy_metadata({"data": "mnist", "protocol": "1k", "seed": 2}) == jdata.DatasetSource(
        "mnist", None, "database", "1k", 2, shuffle_official=False)
    assert source_from_legacy_metadata({"root": "/x", "paths": ["a/1.png"]}) == jdata.FolderSource("/x", ("a/1.png",))


def test_protocols(rng):
    y = np.repeat(np.arange(10), 150)
    x = rng.integers(0, 256, (1500, 2, 2, 1)).astype(np.uint8)
    ds = jdata.Dataset("toy", x[:1200], y[:1200], x[1200:], y[1200:], tuple("0123456789"))
    split = retrieval_split(ds, "1k", seed=3)
    assert np.bincount(split.query_y).tolist() == [100] * 10
    assert len(split.db_y) == 500
    again = retrieval_split(ds, "1k", seed=3)
    np.testing.assert_array_equal(split.query_x, again.query_x)
    assert not np.array_equal(retrieval_split(ds, "1k", seed=4).query_x, split.query_x)
    official = retrieval_split(ds, "official")
    assert len(official.query_y) == 300 and len(official.db_y) == 1200
    # the train split loads class by class; the database is put in a seeded order (fair ties), or kept as loaded
    assert not np.array_equal(official.db_y, y[:1200]) and np.array_equal(np.sort(official.db_y), y[:1200])
    np.testing.assert_array_equal(retrieval_split(ds, "official").db_x, official.db_x)
    as_loaded = retrieval_split(ds, "official", shuffle_official=False)
    np.testing.assert_array_equal(as_loaded.db_y, y[:1200])
    assert source_from_json({"kind": "dataset", "name": "toy", "part": "database", "protocol": "official"}).shuffle_official is False
    assert len(retrieval_split(ds, "200").query_y) == 200
    with pytest.raises(ValueError, match="unknown protocol"):
        retrieval_split(ds, "half")
    assert to_features(x[:3]).dtype == np.float32 and to_features(x[:3]).max() <= 1.0


def test_digits_ships_with_scikit_learn():
    pytest.importorskip("sklearn")
    ds = load_dataset("digits")
    assert ds.x_train.shape == (1797, 8, 8, 1) and ds.x_train.max() == 255
    with pytest.raises(ValueError, match="no official test split"):
        retrieval_split(ds, "official")


def test_tfds_is_optional():
    try:
        import tensorflow_datasets  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match=r"jaxhash\[tfds\]"):
            load_dataset("tfds:cifar10")
    else:
        pytest.skip("tensorflow-datasets is installed; its online path is not tested offline")


def test_shared_mnist():
    data_dir = shared_data_or_skip("mnist")
    ds = load_dataset("mnist", data_dir=data_dir)
    assert ds.x_train.shape == (60000, 28, 28, 1) and ds.x_test.shape == (10000, 28, 28, 1)
    assert np.bincount(ds.y_test).sum() == 10000


@pytest.mark.slow
def test_shared_cifar10_archive():
    data_dir = shared_data_or_skip("cifar10-jpg.tar.gz")
    ds = load_dataset("cifar10", data_dir=data_dir, progress=False)
    assert ds.x_train.shape == (50000, 32, 32, 3) and ds.x_test.shape == (10000, 32, 32, 3)
    assert ds.class_names == jdata.CIFAR10_CLASSES
    assert np.bincount(ds.y_train).tolist() == [5000] * 10


def test_a_protocol_draws_the_same_number_of_queries_from_every_class():
    split = jdata.retrieval_split(jdata.load_dataset("digits"), "15", seed=0)
    assert len(split.query_y) == 10 and set(np.bincount(split.query_y)) == {1}
    with pytest.raises(ValueError, match="1 query cannot cover 10 classes: use a protocol of at least 10 queries"):
        jdata.retrieval_split(jdata.load_dataset("digits"), "1", seed=0)
