import argparse
import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest
from PIL import Image

import jaxhash
from conftest import REPO
from jaxhash.cli import _format_table, _hasher_options, main
from jaxhash.data import load_image_folder
from jaxhash.index import ModelRef
from jaxhash.search import HOST_SEARCH_MAX_QUERIES


def test_benchmark_table_and_json(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "bench.json"
    code = main(["benchmark", "--data", "digits", "--protocol", "200", "--methods", "lsh,itq",
                 "--bits", "8,16", "--metric", "map@all,p@10", "--json", str(out)])
    assert code == 0
    text = capsys.readouterr().out
    assert "map@all" in text and "itq" in text
    records = json.loads(out.read_text())
    assert len(records) == 2 * 2 * 2
    assert {r["method"] for r in records} == {"lsh", "itq"} and {r["bits"] for r in records} == {8, 16}
    for r in records:
        assert 0.0 <= r["value"] <= 1.0 and r["fit_seconds"] >= 0 and r["metric"] in ("map@all", "p@10")
    for first, second in zip(records[::2], records[1::2]):  # one model, two metrics: encoded once, timed once
        assert first["encode_seconds"] == second["encode_seconds"]
    assert main(["benchmark", "--data", "nowhere", "--bits", "8,16", "--metric", "map@all,pr@12"]) == 2  # before the data
    assert "--metric pr@12 asks for a Hamming radius of 12, more than the 8 bits of the shortest code" in capsys.readouterr().err
    assert main(["benchmark", "--data", "nowhere", "--methods", ","]) == 2
    assert "--methods names no method" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["benchmark", "--data", "digits", "--seed", "-1"])
    assert "argument --seed: expected a non-negative integer" in capsys.readouterr().err  # was NumPy's, naming no option
    with pytest.warns(UserWarning, match="for the model's input shape"):  # 8x8 grey digits into the tiny preset's 16x16x3
        assert main(["benchmark", "--data", "digits", "--protocol", "200", "--methods", "lsh,cnn-softmax", "--preset", "tiny",
                     "--epochs", "1", "--bits", "16", "--json", str(out)]) == 0
    assert [r["method"] for r in json.loads(out.read_text())] == ["lsh", "cnn-softmax"]  # lsh takes no epochs: ignored
    given = argparse.Namespace(preset="tiny", epochs=1)
    assert _hasher_options("cnn-softmax", given, single_method=False) == {"preset": "tiny", "epochs": 1}


def make_folder(root, rng):
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    for split in ("train", "test"):
        for name, colour in colours.items():
            d = root / split / name
            d.mkdir(parents=True)
            for i in range(6):
                noise = rng.integers(-25, 25, (12, 12, 3))
                img = np.clip(np.array(colour) + noise, 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i}.png")
    (root / "train" / "red" / "corrupt.png").write_bytes(b"garbage")


def test_fit_index_search_round_trip(tmp_path, rng, capsys):
    folder = tmp_path / "photos"
    make_folder(folder, rng)
    model, index, grid = tmp_path / "model", tmp_path / "photos.jhx", tmp_path / "grid.png"
    with pytest.warns(UserWarning, match="corrupt.png"):
        assert main(["fit", "--data", str(folder), "--protocol", "official", "--method", "pcah", "--bits", "2", "--out", str(model)]) == 0
    with pytest.warns(UserWarning, match="corrupt.png"):
        assert main(["index", "--model", str(model), "--folder", str(folder), "--out", str(index)]) == 0
    query = folder / "test" / "blue" / "3.png"
    assert main(["search", "--model", str(model), "--index", str(index), str(query), "--k", "4",
                 "--grid", str(grid), "--json", str(tmp_path / "r.json")]) == 0
    text = capsys.readouterr().out
    assert "query " + str(query) in text
    results = json.loads((tmp_path / "r.json").read_text())[0]["results"]
    # Two principal directions separate the three colours: every hit is a blue patch at distance 0.
    assert [r["rank"] for r in results] == [1, 2, 3, 4]
    assert all("/blue/" in r["path"] and r["distance"] == 0 for r in results)
    with Image.open(grid) as img:
        assert img.size[0] > 4 * 96 and img.size[1] >= 96


def test_errors_are_one_clear_line(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("JAXHASH_DATA", raising=False)
    assert main(["search", "--model", str(tmp_path / "nope"), "--index", "x.jhx", "q.png"]) == 2
    assert "train one with  jaxhash fit" in capsys.readouterr().err
    assert main(["benchmark", "--data", str(tmp_path / "missing"), "--methods", "lsh"]) == 2
    assert "neither a known data set" in capsys.readouterr().err
    assert main(["benchmark", "--data", "digits", "--methods", "nosuch"]) == 2
    assert "unknown hashing method" in capsys.readouterr().err


def test_fit_dbn_with_checkpoints_and_resume(tmp_path, capsys):
    pytest.importorskip("sklearn")
    common = ["fit", "--data", "digits", "--protocol", "200", "--method", "dbn-ae", "--bits", "8", "--preset", "tiny",
              "--checkpoint-dir", str(tmp_path / "ck"), "--out", str(tmp_path / "model")]
    assert main(common) == 0
    assert main(common) == 2  # checkpoints exist: refuse to overwrite without --resume
    assert "--resume" in capsys.readouterr().err
    assert main(common + ["--resume"]) == 0
    assert main(["fit", "--data", "digits", "--method", "itq", "--bits", "8", "--preset", "tiny", "--out", str(tmp_path / "m2")]) == 2
    assert "takes no --preset" in capsys.readouterr().err
    assert main(common[:11] + ["--data-parallel", "--out", str(tmp_path / "dp")]) == 0  # every batch over all devices
    assert jaxhash.load_hasher(tmp_path / "dp").data_parallel is True
    assert main(["fit", "--data", "digits", "--method", "itq", "--data-parallel", "--out", str(tmp_path / "m3")]) == 2
    assert "takes no --data-parallel" in capsys.readouterr().err


def test_console_script_help():
    result = subprocess.run([sys.executable, "-m", "jaxhash.cli", "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0 and "benchmark" in result.stdout


def make_photo_folder(root, rng, per_class=8):
    """class/*.jpg|png as a user brings it: colour and a few grey photos, one larger, one PNG."""
    colours = {"red": (220, 20, 20), "green": (20, 200, 20), "blue": (20, 20, 220)}
    for name, colour in colours.items():
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            img = Image.fromarray(np.clip(np.array(colour) + rng.integers(-25, 25, (16, 16, 3)), 0, 255).astype(np.uint8))
            if i == 0:
                img.convert("L").save(root / name / f"{i}.jpg")
            elif i == 1 and name == "blue":
                img.resize((40, 30)).save(root / name / f"{i}.png")
            else:
                img.save(root / name / f"{i}.jpg")


def test_fit_on_a_photo_folder_of_mixed_sizes_and_channels(tmp_path, rng, capsys):
    folder = tmp_path / "photos"
    make_photo_folder(folder, rng)
    model = tmp_path / "model"
    assert main(["fit", "--data", str(folder), "--method", "pcah", "--bits", "2", "--out", str(model)]) == 2
    err = capsys.readouterr().err
    assert "different sizes: 16x16 (23 images), 30x40 (1 image)" in err and "--image-size 16x16" in err
    with pytest.warns(UserWarning, match=r"converted 3 grey images to RGB \(21 of 24 images are RGB\)"):
        assert main(["fit", "--data", str(folder), "--method", "pcah", "--bits", "2", "--image-size", "16", "--out", str(model)]) == 0
    assert "on the 24 images of photos (16x16x3)" in capsys.readouterr().out  # every image: no protocol asked for
    assert jaxhash.load_hasher(model).input_shape_ == (16, 16, 3)
    shell = subprocess.run([sys.executable, "-m", "jaxhash.cli", "fit", "--data", str(folder), "--method", "pcah", "--bits", "2",
                            "--image-size", "16", "--out", str(model)], capture_output=True, text=True, cwd=REPO,
                           env={**os.environ, "JAXHASH_PROGRESS": "0"})
    assert shell.returncode == 0 and shell.stderr.splitlines() == [
        f"jaxhash fit: note: images in {folder}: converted 3 grey images to RGB (21 of 24 images are RGB)"]
    with pytest.warns(UserWarning):
        assert main(["fit", "--data", str(folder), "--method", "pcah", "--bits", "2", "--image-size", "16", "--protocol", "1k",
                     "--out", str(model)]) == 2
    assert ("class 'blue' of photos has only 8 images, too few for 333 queries per class (and one left in the "
            "database): use a protocol of at most 21 queries (--protocol 21)") in capsys.readouterr().err  # asked for a protocol the folder cannot hold
    with pytest.warns(UserWarning, match=r"have 2 different sizes: all are resized to the most common, 16x16 \(23 of 24"):
        assert main(["fit", "--data", str(folder), "--method", "vae", "--preset", "tiny", "--bits", "8", "--epochs", "1",
                     "--batch-size", "8", "--out", str(model)]) == 0
    assert jaxhash.load_hasher(model).input_shape_ == (16, 16, 3)


@pytest.mark.filterwarnings("ignore:.*converted 3 grey images")
def test_a_hasher_fitted_in_python_indexes_a_folder_and_searches(tmp_path, rng, capsys):
    folder = tmp_path / "photos"
    make_photo_folder(folder, rng)
    sets = load_image_folder(folder, image_size=(16, 16), progress=False)
    jaxhash.PCAH(n_bits=2).fit(sets["all"].images).save(tmp_path / "model")
    index, grid, out = tmp_path / "photos.jhx", tmp_path / "grid.png", tmp_path / "r.json"
    with pytest.warns(UserWarning, match=r"converted 3 grey images to RGB \(21 of 24 images are RGB\)"):  # as fit says
        assert main(["index", "--model", str(tmp_path / "model"), "--folder", str(folder), "--out", str(index)]) == 0
    query = folder / "blue" / "1.png"  # 40x30: resized to the model's 16x16
    assert main(["search", "--model", str(tmp_path / "model"), "--index", str(index), str(query), "--k", "5",
                 "--grid", str(grid), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"query {query}  (class blue)" in text and "ok  [blue]  blue/" in text
    (result,) = json.loads(out.read_text())
    assert result["class"] == "blue"
    assert all(h["class"] == "blue" and h["same_class"] and h["path"].startswith("blue/") for h in result["results"])
    with Image.open(grid) as img:
        assert img.size[0] > 5 * 96
        assert img.getpixel((6 + 96 + 12 - 1, 6 + 40)) == (0, 140, 0)  # a correct result is framed in green
        # the 40x30 query is drawn at its own shape (96x72, white above and below), not the model's 16x16
        assert img.getpixel((6 + 48, 6 + 5)) == (255, 255, 255) and img.getpixel((6 + 48, 6 + 48))[2] > 150
    clear = tmp_path / "clear.png"
    with Image.open(folder / "blue" / "2.jpg") as img:
        rgba = np.dstack([np.asarray(img), np.full((16, 16), 100, np.uint8)])
    Image.fromarray(rgba).save(clear)
    with pytest.warns(UserWarning, match=r"query images: dropped the transparency \(alpha channel\) of 1 image:"):
        assert main(["search", "--model", str(tmp_path / "model"), "--index", str(index), str(clear), "--k", "1"]) == 0


@pytest.mark.filterwarnings("ignore:.*converted 3 grey images")
def test_an_index_refuses_another_model_and_folders_as_queries(tmp_path, rng, capsys):
    folder = tmp_path / "photos"
    make_photo_folder(folder, rng)
    common = ["--data", str(folder), "--bits", "8", "--image-size", "16"]
    assert main(["fit", *common, "--method", "lsh", "--out", str(tmp_path / "a")]) == 0
    assert main(["fit", *common, "--method", "lsh", "--seed", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["index", "--model", str(tmp_path / "a"), "--folder", str(folder), "--out", str(tmp_path / "i.jhx")]) == 0
    capsys.readouterr()
    query = str(folder / "red" / "2.jpg")
    assert main(["search", "--model", str(tmp_path / "b"), "--index", str(tmp_path / "i.jhx"), query]) == 2
    assert "this index was built by the lsh 8-bit model" in capsys.readouterr().err
    assert main(["search", "--model", str(tmp_path / "a"), "--index", str(tmp_path / "i.jhx"), str(folder / "red")]) == 2
    assert "is a folder: pass image files" in capsys.readouterr().err


def test_every_option_has_help():
    from jaxhash.cli import build_parser

    parser = build_parser()
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    for name, command in sub.choices.items():
        for action in command._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"jaxhash {name} {action.option_strings or action.dest} has no help text"


def test_commands_import_only_what_they_need(tmp_path, rng):
    """--help loads no JAX; a classic hasher's search of a few images loads none of JAX, Flax, Optax (a NumPy
    scan), of more images JAX only."""
    images = rng.integers(0, 256, (40, 8, 8, 3)).astype(np.uint8)
    hasher = jaxhash.ITQ(n_bits=16).fit(images)
    hasher.save(tmp_path / "m")
    index = jaxhash.HashIndex(16, model=ModelRef.of(hasher))
    index.add(hasher.encode(images))
    jaxhash.write_index(index, tmp_path / "i.jhx")
    Image.fromarray(images[0]).save(tmp_path / "q.png")
    probe = ("import sys, contextlib, io\nfrom jaxhash.cli import main\nwith contextlib.redirect_stdout(io.StringIO()):\n"
             "    try:\n        main(sys.argv[1:])\n    except SystemExit:\n        pass\n"
             "print(sorted(m for m in ('jax', 'flax', 'optax', 'orbax') if m in sys.modules))")
    run = lambda *argv: subprocess.run([sys.executable, "-c", probe, *argv], capture_output=True, text=True, cwd=REPO).stdout.strip()  # noqa: E731
    assert run("--help") == "[]"
    search = ("search", "--model", str(tmp_path / "m"), "--index", str(tmp_path / "i.jhx"))
    assert run(*search, str(tmp_path / "q.png")) == "[]"
    assert run(*search, *[str(tmp_path / "q.png")] * (HOST_SEARCH_MAX_QUERIES + 1)) == "['jax']"


@pytest.mark.filterwarnings("ignore:.*converted 3 grey images")
def test_index_of_a_data_folder_points_at_its_files(tmp_path, rng, capsys, monkeypatch):
    make_photo_folder(tmp_path / "photos", rng)
    monkeypatch.chdir(tmp_path)
    assert main(["fit", "--data", "photos", "--method", "pcah", "--bits", "2", "--image-size", "16", "--out", "m"]) == 0
    # --data with a relative path and images of mixed sizes: loaded at the model's size, filed by path
    assert main(["index", "--model", "m", "--data", "photos", "--out", "i.jhx"]) == 0
    index = jaxhash.read_index(tmp_path / "i.jhx")
    assert index.source.root == str(tmp_path / "photos") and index.source.paths[0] == "blue/0.jpg" and index.ntotal == 24
    monkeypatch.chdir(REPO)  # elsewhere: the index still finds its images
    capsys.readouterr()
    assert main(["search", "--model", str(tmp_path / "m"), "--index", str(tmp_path / "i.jhx"), str(tmp_path / "photos" / "red" / "3.jpg"),
                 "--k", "3", "--grid", str(tmp_path / "g.png")]) == 0
    assert "[red]  red/" in capsys.readouterr().out
    assert main(["index", "--model", str(tmp_path / "m"), "--folder", str(tmp_path / "photos"), "--protocol", "1k",
                 "--out", str(tmp_path / "x.jhx")]) == 2
    assert "--protocol and --image-size apply to --data" in capsys.readouterr().err


@pytest.mark.filterwarnings("ignore:.*(converted|resized)")
def test_a_cnn_hasher_on_a_folder_of_own_classes(tmp_path, rng, capsys, monkeypatch):
    folder = tmp_path / "photos"
    make_photo_folder(folder, rng, per_class=12)  # mixed sizes and grey photos: loaded at the model's input size
    model, index, out = tmp_path / "m", tmp_path / "i.jhx", tmp_path / "r.json"
    tiny = ["--preset", "tiny", "--epochs", "6", "--bits", "16"]
    assert main(["fit", "--data", str(folder), "--method", "cnn-hash", *tiny, "--out", str(model)]) == 0
    assert "on the 36 images of photos (16x16x3)" in capsys.readouterr().out
    assert main(["index", "--model", str(model), "--folder", str(folder), "--out", str(index), "--partitioned"]) == 0
    assert "partitions of 3 classes)" in capsys.readouterr().out  # as many as the tiny model tells apart
    loaded = jaxhash.read_index(index)
    assert loaded.feature_dim == 32 and loaded.partitions.shape == (36,)
    cnn_hash = type(jaxhash.load_hasher(model))
    real_encode = cnn_hash.encode_details

    def one_class(self, images, **options):  # a model that has learned nothing: one class for everything
        encoded = dict(real_encode(self, images, **options))
        encoded["probabilities"] = np.eye(encoded["probabilities"].shape[1], dtype=np.float32)[np.zeros(len(images), int)]
        return encoded

    with monkeypatch.context() as patched:
        patched.setattr(cnn_hash, "encode_details", one_class)
        with pytest.warns(UserWarning, match="predicts the same class for every image: it has not learned to tell your 3"):
            assert main(["index", "--model", str(model), "--folder", str(folder), "--out", str(tmp_path / "one.jhx"),
                         "--partitioned"]) == 0
    assert "(1 partition of 3 classes" in capsys.readouterr().out
    query = str(folder / "green" / "5.jpg")
    assert main(["search", "--model", str(model), "--index", str(index), query, "--k", "5", "--top-classes", "2",
                 "--rerank", "20", "--json", str(out)]) == 0
    (result,) = json.loads(out.read_text())
    assert result["measure"] == "euclidean" and result["results"][0]["similarity"] > 0
    assert [h["similarity"] for h in result["results"]] == sorted((h["similarity"] for h in result["results"]), reverse=True)
    assert main(["fit", "--data", str(folder), "--method", "cnn-softmax", *tiny, "--out", str(tmp_path / "s")]) == 0
    assert main(["search", "--model", str(tmp_path / "s"), "--index", str(index), query]) == 2
    assert "this index was built by the cnn-hash" in capsys.readouterr().err
    assert main(["fit", "--data", str(folder), "--method", "itq", "--bits", "8", "--image-size", "16", "--out", str(tmp_path / "p")]) == 0
    assert main(["index", "--model", str(tmp_path / "p"), "--folder", str(folder), "--out", str(tmp_path / "x.jhx"), "--partitioned"]) == 2
    assert "predicts no classes" in capsys.readouterr().err
    assert main(["fit", "--data", str(folder / "red"), "--method", "cnn-hash", *tiny, "--out", str(tmp_path / "one")]) == 2
    err = capsys.readouterr().err
    assert "have no class" in err and "sub-folder named after its class" in err


def photo_folder_and_model(tmp_path, rng, hasher):
    """A photo folder (see make_photo_folder) and ``hasher`` fitted on it at 16x16, saved: ``(folder, model)``."""
    folder = tmp_path / "photos"
    make_photo_folder(folder, rng)
    sets = load_image_folder(folder, image_size=(16, 16), progress=False)
    hasher.fit(sets["all"].images).save(tmp_path / "model")
    return folder, tmp_path / "model"


@pytest.mark.filterwarnings("ignore:.*converted 3 grey images")
def test_searches_compile_once_into_the_cache_folder_and_survive_a_damaged_cache(tmp_path, rng):
    folder, _ = photo_folder_and_model(tmp_path, rng, jaxhash.PCAH(n_bits=2))
    cache = tmp_path / "cache"
    env = dict(os.environ, JAXHASH_CACHE_DIR=str(cache))
    env.pop("JAX_COMPILATION_CACHE_DIR", None)

    def jaxhash_cli(*argv):
        result = subprocess.run([sys.executable, "-m", "jaxhash.cli", *map(str, argv)], capture_output=True, text=True,
                                cwd=REPO, env=env)
        assert result.returncode == 0, result.stderr
        return result

    jaxhash_cli("index", "--model", tmp_path / "model", "--folder", folder, "--out", tmp_path / "i.jhx")
    queries = sorted(folder.rglob("*.*"))[: HOST_SEARCH_MAX_QUERIES + 1]  # more than a host scan takes: JAX compiles
    search = ("search", "--model", tmp_path / "model", "--index", tmp_path / "i.jhx", *queries, "--k", "3")
    first = jaxhash_cli(*search).stdout
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert entries  # the compiled programs were written
    for entry in entries:
        entry.write_bytes(b"damaged")
    repaired = jaxhash_cli(*search)
    assert repaired.stdout == first  # recompiled, not a crash
    assert "damaged entr" in repaired.stderr and "for 'jit_" in repaired.stderr and "Error reading" not in repaired.stderr
    again = jaxhash_cli(*search)  # JAX never overwrites an entry: the damaged ones were removed and written anew
    assert again.stdout == first and "damaged" not in again.stderr, again.stderr
    rewritten = {p.name: p.read_bytes() for p in cache.rglob("*-cache")}
    assert set(rewritten) == {p.name for p in entries if p.name.endswith("-cache")}
    assert b"damaged" not in rewritten.values()
    for entry in cache.rglob("*-cache"):
        entry.write_bytes(b"damaged")
    env["PYTHONWARNINGS"] = "ignore"  # warnings hidden: repaired all the same, and silently
    quiet = jaxhash_cli(*search)
    assert quiet.stdout == first and quiet.stderr == ""
    assert b"damaged" not in {p.read_bytes() for p in cache.rglob("*-cache")}
    del env["PYTHONWARNINGS"]
    env["JAXHASH_CACHE_DIR"] = "off"
    assert jaxhash_cli(*search).stdout == first


def test_only_cache_entries_that_no_longer_decompress_are_removed(tmp_path, monkeypatch):
    from jax._src.compilation_cache import compress_executable

    from jaxhash.cli import _remove_damaged_cache_entries

    healthy, damaged, other = (tmp_path / f"jit_f-{tag}-cache" for tag in ("aa", "bb", "cc"))
    healthy.write_bytes(compress_executable(b"\0" * 8 + b"another shape's program"))
    damaged.write_bytes(b"damaged")
    (tmp_path / "jit_f-bb-atime").write_bytes(b"1")
    other.write_bytes(b"truncated")
    (tmp_path / "jit_fx-dd-cache").write_bytes(b"damaged")  # another program whose name starts alike
    warning = "Error reading persistent compilation cache entry for 'jit_f': error: Error -3 while decompressing data"
    note = _remove_damaged_cache_entries(tmp_path, warning)
    assert "held 2 damaged entries for 'jit_f': removed" in note
    assert sorted(p.name for p in tmp_path.iterdir()) == ["jit_f-aa-cache", "jit_fx-dd-cache"]
    assert _remove_damaged_cache_entries(tmp_path, "some other warning") is None
    repaired = {"jit_f"}  # already repaired and told in this run: nothing more to say
    assert _remove_damaged_cache_entries(tmp_path, warning, repaired) is None
    (tmp_path / "jit_g-ee-cache").write_bytes(b"damaged")  # JAX's other warning names a whole key
    note = _remove_damaged_cache_entries(tmp_path, warning.replace("'jit_f'", "'jit_g-ee'"), repaired)
    assert "held 1 damaged entry for 'jit_g-ee'" in note and repaired == {"jit_f", "jit_g-ee"}
    note = _remove_damaged_cache_entries(tmp_path, warning)  # what is left decompresses: say how to clear it
    assert "cannot load" in note and "deleted" in note and healthy.exists()
    damaged.write_bytes(b"damaged")

    def refuse(self, missing_ok=False):
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(type(damaged), "unlink", refuse)
    assert "cannot load" in _remove_damaged_cache_entries(tmp_path, warning)  # a read-only cache: a note, not a failure


@pytest.mark.filterwarnings("ignore:.*converted 3 grey images")
def test_a_few_queries_are_searched_without_loading_jax(tmp_path, rng):
    folder, model = photo_folder_and_model(tmp_path, rng, jaxhash.ITQ(n_bits=16))
    assert main(["index", "--model", str(model), "--folder", str(folder), "--out", str(tmp_path / "i.jhx")]) == 0
    queries = [str(folder / "red" / "2.jpg"), str(folder / "blue" / "1.png")]
    search = ["search", "--model", str(model), "--index", str(tmp_path / "i.jhx"), *queries, "--k", "7", "--json"]
    code = "import sys; from jaxhash.cli import main; main(sys.argv[1:]); print('jax loaded:', 'jax' in sys.modules)"
    shell = subprocess.run([sys.executable, "-c", code, *search, str(tmp_path / "host.json")], capture_output=True, text=True,
                           cwd=REPO, env={**os.environ, "JAXHASH_PROGRESS": "0"})
    assert shell.returncode == 0, shell.stderr
    assert shell.stdout.rstrip().endswith("jax loaded: False")  # a NumPy scan: nothing to import or compile
    assert main([*search, str(tmp_path / "jax.json")]) == 0  # this process has JAX loaded: the compiled search
    assert json.loads((tmp_path / "host.json").read_text()) == json.loads((tmp_path / "jax.json").read_text())


@pytest.mark.filterwarnings("ignore:.*converted 3 grey images")
def test_a_multi_index_answers_as_the_flat_index(tmp_path, rng, capsys):
    folder, model = photo_folder_and_model(tmp_path, rng, jaxhash.LSH(n_bits=24))
    model = str(model)
    assert main(["index", "--model", model, "--folder", str(folder), "--out", str(tmp_path / "f.jhx")]) == 0
    assert main(["index", "--model", model, "--folder", str(folder), "--out", str(tmp_path / "m.jhx"), "--type", "mih",
                 "--substrings", "3"]) == 0
    assert "multi-index, 3 substrings" in capsys.readouterr().out
    results = []
    for name in ("f.jhx", "m.jhx"):
        out = tmp_path / f"{name}.json"
        assert main(["search", "--model", model, "--index", str(tmp_path / name), str(folder / "red" / "2.jpg"),
                     str(folder / "blue" / "1.png"), "--k", "9", "--json", str(out)]) == 0
        results.append(json.loads(out.read_text()))
    assert results[0] == results[1]
    out = tmp_path / "sharded.json"
    assert main(["search", "--model", model, "--index", str(tmp_path / "f.jhx"), str(folder / "red" / "2.jpg"),
                 str(folder / "blue" / "1.png"), "--k", "9", "--json", str(out), "--shard"]) == 0
    assert json.loads(out.read_text()) == results[0]  # over this process's one CPU device
    capsys.readouterr()
    assert main(["search", "--model", model, "--index", str(tmp_path / "m.jhx"), str(folder / "red" / "2.jpg"), "--shard"]) == 2
    assert "was built with --type mih: drop --shard, or rebuild the index with  jaxhash index  without --type mih" in \
        capsys.readouterr().err
    assert main(["index", "--model", model, "--folder", str(folder), "--out", str(tmp_path / "x.jhx"), "--type", "mih",
                 "--substrings", "25"]) == 2
    assert "25 substrings of 24-bit codes would leave some empty: use at most 24" in capsys.readouterr().err
    assert main(["index", "--model", model, "--folder", str(folder), "--out", str(tmp_path / "x.jhx"), "--substrings", "2"]) == 2
    assert "add --type mih" in capsys.readouterr().err


def test_cluster_prints_scores_and_draws_the_embeddings(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out, png = tmp_path / "c.json", tmp_path / "c.png"
    assert main(["cluster", "--data", "digits", "--features", "pixels,sparse-ae", "--reduce", "none,pca", "--dims", "2",
                 "--preset", "tiny", "--epochs", "1", "--json", str(out), "--plot", str(png)]) == 0
    printed = capsys.readouterr().out
    assert "k = 10 clusters of 1797 images" in printed and "NMI" in printed
    records = json.loads(out.read_text())
    assert [(r["features"], r["reduction"]) for r in records] == [("pixels", "none"), ("pixels", "pca"),
                                                                  ("sparse-ae", "none"), ("sparse-ae", "pca")]
    assert records[0]["accuracy"] > 0.6 and 0 < records[0]["nmi"] <= 1  # k-means on the digits' pixels: about .79
    assert png.stat().st_size > 10_000
    assert main(["cluster", "--data", "digits", "--features", "colour-histograms"]) == 2
    assert "unknown --features 'colour-histograms'" in capsys.readouterr().err
    assert main(["cluster", "--data", "digits", "--features", "pixels", "--k", "5000"]) == 2
    printed = capsys.readouterr()
    assert "--k 5000 is more clusters than the 1797 images: use --k 1797 or fewer" in printed.err
    assert "accuracy" not in printed.out  # refused before the table starts


def test_cluster_on_patch_features_beats_the_pixels_and_caps_the_dimensions(tmp_path, capsys):
    pytest.importorskip("sklearn")
    out = tmp_path / "c.json"
    assert main(["cluster", "--data", "digits", "--features", "patches,pixels", "--json", str(out)]) == 0
    records = {r["features"]: r for r in json.loads(out.read_text())}
    assert records["patches"]["accuracy"] > records["pixels"]["accuracy"], records  # about .84 against .79
    assert main(["cluster", "--data", "digits", "--features", "pixels", "--algorithm", "balanced", "--json", str(out)]) == 0
    balanced = json.loads(out.read_text())[0]
    assert balanced["algorithm"] == "balanced" and balanced["accuracy"] > 0.7, balanced
    uneven = tmp_path / "uneven"
    make_folder(uneven, np.random.default_rng(0))
    for i in range(5):
        (uneven / "train" / "green" / f"{i}.png").unlink()
    with pytest.warns(UserWarning) as said:
        assert main(["cluster", "--data", str(uneven), "--features", "pixels", "--algorithm", "balanced"]) == 0
    assert any("the classes here hold 7 to 12 images each" in str(w.message) for w in said), [str(w.message) for w in said]
    assert main(["cluster", "--data", "digits", "--features", "patches", "--limit", "30", "--k", "3"]) == 2
    assert "--features patches cannot take 50 principal components of 30 images: use --pca-dims 30" in capsys.readouterr().err
    assert main(["cluster", "--data", "digits", "--features", "patches", "--limit", "20", "--k", "3"]) == 2
    printed = capsys.readouterr()
    assert ("--features patches learns 256 kinds of patch, but 20 images of 8x8 hold only 180 patches: use at least 29 "
            "images") in printed.err and "accuracy" not in printed.out  # refused before the table starts
    assert main(["cluster", "--data", "digits", "--features", "patches", "--image-size", "6"]) == 2
    assert "which do not fit in 6x6 images: read them at --image-size 32" in capsys.readouterr().err


def test_cluster_refuses_bad_names_before_any_work_speaks_in_options_and_keeps_rows_measured(tmp_path, rng, capsys,
                                                                                              monkeypatch):
    pytest.importorskip("sklearn")
    import jaxhash.cli as cli
    from jaxhash import cluster

    loaded = []
    real_load = cli._load_dataset
    monkeypatch.setattr(cli, "_load_dataset", lambda args, *rest: loaded.append(args.data) or real_load(args, *rest))
    assert main(["cluster", "--data", "digits", "--features", "pixels,bogus"]) == 2
    assert "unknown --features 'bogus'" in capsys.readouterr().err
    assert main(["cluster", "--data", "digits", "--features", "pixels", "--reduce", "none,tsnee"]) == 2
    assert "unknown --reduce 'tsnee': use none, pca, tsne, umap" in capsys.readouterr().err
    assert main(["cluster", "--data", "digits", "--reduce", "umap", "--dims", "200", "--algorithm", "gmm"]) == 2
    assert "use --dims at most 128 or --algorithm kmeans" in capsys.readouterr().err
    assert loaded == []  # all three refused before the data was read
    with pytest.warns(UserWarning, match=r"--reduce pca of pixels: 100 points of 64 values have at most 64 principal "
                                         r"components, so 64 dims, not 200"):
        assert main(["cluster", "--data", "digits", "--features", "pixels", "--reduce", "pca", "--dims", "200", "--algorithm",
                     "gmm", "--limit", "100"]) == 0  # PCA gives at most the digits' 64 values: a mixture can take them
    assert capsys.readouterr().out.count("pixels       pca") == 1
    make_folder(tmp_path / "photos", rng)  # 12x12x3: 432 values per image, too many for a full-covariance mixture
    with pytest.warns(UserWarning, match="corrupt.png"):
        assert main(["cluster", "--data", str(tmp_path / "photos"), "--features", "pixels", "--algorithm", "gmm"]) == 2
    err = capsys.readouterr().err
    assert "--reduce pca or umap" in err and "--algorithm kmeans" in err and "covariance=" not in err
    assert main(["cluster", "--data", "digits", "--features", "pca", "--limit", "30"]) == 2
    assert "use --pca-dims 30 or fewer" in capsys.readouterr().err

    real_embed = cluster.embed

    def embed_failing_at_umap(x, method, *args, **options):
        if method == "umap":
            raise KeyboardInterrupt
        return real_embed(x, method, *args, **options)

    monkeypatch.setattr(cluster, "embed", embed_failing_at_umap)
    out = tmp_path / "rows.json"
    assert main(["cluster", "--data", "digits", "--features", "pixels", "--reduce", "none,pca,umap", "--json", str(out)]) == 130
    assert [r["reduction"] for r in json.loads(out.read_text())] == ["none", "pca"]  # the rows measured before Ctrl-C


@pytest.mark.filterwarnings("ignore:.*converted 3 grey images")
def test_cluster_reads_a_folder_as_its_models_take_it_and_says_what_it_cannot_do(tmp_path, rng, capsys):
    pytest.importorskip("sklearn")
    folder = tmp_path / "photos"
    make_photo_folder(folder, rng)  # 16x16 photos and one of 40x30
    model = tmp_path / "vae"
    assert main(["fit", "--data", str(folder), "--method", "sparse-ae", "--preset", "tiny", "--bits", "8", "--epochs", "1",
                 "--batch-size", "8", "--image-size", "16", "--out", str(model)]) == 0
    capsys.readouterr()
    assert main(["cluster", "--data", str(folder), "--features", str(model), "--k", "3"]) == 0  # read at the model's 16x16
    assert "clusters of 24 images" in capsys.readouterr().out
    assert main(["cluster", "--data", str(folder), "--features", f"{model},pixels"]) == 2  # pixels: the user chooses the size
    assert "--image-size 16x16" in capsys.readouterr().err
    assert main(["cluster", "--data", "digits", "--features", "pixels", "--limit", "50", "--reduce", "umap", "--dims", "49"]) == 2
    assert "--dims 49 is too many for umap of 50 images: use --dims 48 or fewer" in capsys.readouterr().err
    assert main(["cluster", "--data", "digits", "--features", "pca", "--pca-dims", "5", "--limit", "100", "--reduce", "tsne",
                 "--dims", "8"]) == 2  # t-SNE starts from PCA: at most as many dims as the features have
    assert "--dims 8 is too many for tsne of 100 images of 5 pca values: use --dims 5 or fewer" in capsys.readouterr().err
    assert main(["cluster", "--data", str(folder), "--features", str(model), "--part", "test"]) == 2
    assert "no train and test splits (a class/*.jpg folder is one set): use --part all" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # a retrieval protocol means nothing to clustering
        main(["cluster", "--data", "digits", "--protocol", "1k"])
    assert "unrecognized arguments: --protocol" in capsys.readouterr().err
    png = tmp_path / "one.png"
    with pytest.warns(UserWarning, match="--plot leaves out pixels, pca: its points have one dimension"):
        assert main(["cluster", "--data", "digits", "--features", "pixels", "--limit", "100", "--reduce", "pca", "--dims", "1",
                     "--plot", str(png)]) == 0
    assert not png.exists()


def test_the_cache_repair_asks_pythons_own_filters_whether_a_warning_is_ignored():
    from jaxhash.cli import _ignored

    message, module = "Error reading persistent compilation cache entry for 'jit_f': ValueError: x", "jax._src.compiler"
    for setting, ignored in ((("ignore",), True), (("default",), False), (("error",), False),
                             (("ignore", "Error reading persistent compilation cache entry for"), True),
                             (("ignore", "", UserWarning, "jax"), True), (("ignore", "", UserWarning, "numpy"), False),
                             (("ignore", "", DeprecationWarning), False)):
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            warnings.filterwarnings(*setting)
            assert _ignored(UserWarning, message, module) is ignored, setting


def test_fit_resume_needs_the_checkpoint_folder_and_an_interrupted_fit_says_how_to_go_on(tmp_path, rng, capsys, monkeypatch):
    import jaxhash.cli as cli

    assert main(["fit", "--data", "digits", "--method", "vae", "--preset", "tiny", "--resume", "--out", str(tmp_path / "m")]) == 2
    assert "--checkpoint-dir DIR --resume" in capsys.readouterr().err

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_load_dataset", interrupted)
    checkpoints = tmp_path / "ckpt"
    fit = ["fit", "--data", "digits", "--method", "vae", "--checkpoint-dir", str(checkpoints), "--out", str(tmp_path / "m")]
    assert main(fit) == 130
    assert capsys.readouterr().err == "jaxhash fit: interrupted\n"  # stopped before any epoch was saved
    (checkpoints / "0").mkdir(parents=True)  # an epoch's checkpoint
    assert main(fit) == 130
    assert f"interrupted; the epochs done are saved in {checkpoints}: the same command with --resume" in capsys.readouterr().err
    assert main(["fit", "--data", "digits", "--method", "itq", "--out", str(tmp_path / "m")]) == 130
    assert capsys.readouterr().err == "jaxhash fit: interrupted\n"  # nothing to keep: no epochs
    assert main(["fit", "--data", "digits", "--method", "vae", "--out", str(tmp_path / "m")]) == 130
    assert capsys.readouterr().err == ("jaxhash fit: interrupted; nothing was kept: with --checkpoint-dir DIR every epoch is "
                                       "saved, and --resume continues from the last\n")


def test_cluster_by_n2d_autoencoder_umap_and_mixture_finds_the_digits(tmp_path, capsys):
    pytest.importorskip("umap")
    out = tmp_path / "n2d.json"
    assert main(["cluster", "--data", "digits", "--features", "ae", "--preset", "n2d", "--epochs", "100", "--batch-size",
                 "32", "--reduce", "umap", "--algorithm", "gmm", "--json", str(out)]) == 0
    record = json.loads(out.read_text())[0]
    assert (record["features"], record["reduction"], record["dims"]) == ("ae", "umap", 10)
    assert record["accuracy"] > 0.9, record  # .94 here; k-means on the pixels .79, UMAP of the pixels + GMM .88


def test_a_model_that_gives_every_image_one_code_is_named(capsys, monkeypatch):
    pytest.importorskip("sklearn")
    from jaxhash.baselines import LSH

    monkeypatch.setattr(LSH, "encode", lambda self, x, **kw: np.zeros((len(x), 1), np.uint32))  # a collapsed model
    assert main(["benchmark", "--data", "digits", "--protocol", "200", "--methods", "lsh", "--bits", "8"]) == 0
    assert ("note: lsh at 8 bits gives all 1597 images the same code, so it tells none of them apart: use another method or "
            "code length") in capsys.readouterr().err  # lsh has no training to lengthen
    monkeypatch.undo()
    assert main(["benchmark", "--data", "digits", "--protocol", "15", "--methods", "lsh", "--bits", "8"]) == 0
    printed = capsys.readouterr()
    assert "same code" not in printed.err
    assert "protocol 15: 10 queries (15 asked: the same number from each of the 10 classes)" in printed.out


def test_benchmark_tables_keep_their_columns_aligned_for_long_method_names():
    table = {("cnn-hash-frozen", "map@all"): {64: 0.75}, ("itq", "map@all"): {64: 0.14, 32: 0.13}}
    lines = _format_table(table, ["cnn-hash-frozen", "itq"], [32, 64], ["map@all"]).splitlines()
    assert len({len(line) for line in lines}) == 1  # header, rule and rows all end in the same column
    assert lines[2].split() == ["cnn-hash-frozen", "-", "0.7500"] and lines[3].split() == ["itq", "0.1300", "0.1400"]


def test_a_data_set_resized_to_the_models_input_size_is_said_once(tmp_path, rng):
    pytest.importorskip("sklearn")
    hasher = jaxhash.PCAH(n_bits=16, seed=0).fit(rng.integers(0, 256, (64, 28, 28, 1), dtype=np.uint8))
    hasher.save(tmp_path / "pcah28")
    index = ["index", "--model", str(tmp_path / "pcah28"), "--data", "digits"]
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main([*index, "--out", str(tmp_path / "d.jhx")]) == 0
    assert [str(w.message) for w in caught] == ["the images of digits are 8x8: resized to the model's input size 28x28"]
    with warnings.catch_warnings(record=True) as caught:  # a size the user chose: nothing to say
        warnings.simplefilter("always")
        assert main([*index, "--image-size", "28", "--out", str(tmp_path / "e.jhx")]) == 0
    assert not caught
    assert jaxhash.read_index(tmp_path / "d.jhx").ntotal == jaxhash.read_index(tmp_path / "e.jhx").ntotal == 1797


def test_a_json_file_that_cannot_be_written_is_refused_before_the_work_and_numbers_are_plain(tmp_path, capsys):
    (tmp_path / "file").write_text("")
    for target, said in ((tmp_path, "is a folder: give a file name"), (tmp_path / "file" / "r.json", "is a file, not a folder")):
        assert main(["benchmark", "--data", "no-such-set", "--methods", "lsh", "--json", str(target)]) == 2
        err = capsys.readouterr().err
        assert said in err and "no-such-set" not in err and err.count("\n") == 1  # one line, before any data is looked for
    from jaxhash.cli import write_json

    write_json(tmp_path / "new" / "deeper" / "r.json", {"map": np.float32(0.5), "n": np.int64(3), "rows": [np.uint8(1)]})
    assert json.loads((tmp_path / "new" / "deeper" / "r.json").read_text()) == {"map": 0.5, "n": 3, "rows": [1]}
    with pytest.raises(TypeError, match="ndarray cannot be written as JSON"):
        write_json(tmp_path / "r.json", {"codes": np.zeros(3)})
