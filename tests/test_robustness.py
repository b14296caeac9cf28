"""Bad input and faults: no code from data files, one clear line for every bad input, bounded
memory, atomic saves, validated file content. Each test reproduces a case the audit found."""
import gzip
import hashlib
import json
import os
import pickle
import struct
import subprocess
import sys
import tarfile

import numpy as np
import pytest
from PIL import Image

import jaxhash
from conftest import REPO, random_codes
from jaxhash.atomic import current_version
from jaxhash.cli import main
from jaxhash.data import folders, load_dataset, load_image_folder
from jaxhash.data.cifar import load_pickle_folder
from jaxhash.index import IndexFormatError

sys.path.insert(0, str(REPO / "scripts"))
import fuzz  # noqa: E402


def test_small_fuzz_finds_no_traceback_no_silent_error_no_code_execution(tmp_path):
    """The long version is  python scripts/fuzz.py  (2,000 tries per category)."""
    out = tmp_path / "fuzz.json"
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "fuzz.py"), "--tries", "60", "--json", str(out)],
                            capture_output=True, text=True, cwd=tmp_path, env={**os.environ, "JAXHASH_PROGRESS": "0"})
    counts = json.loads(out.read_text())["counts"]
    assert set(counts) == {"index file", "archive", "archive cache", "pickle", "saved hasher", "arguments", "wide codes", "command line"}
    for category, c in counts.items():
        assert c["tries"] > 0 and c.get("traceback", 0) == c.get("wrong", 0) == c.get("executed", 0) == 0, (category, result.stdout)
    assert result.returncode == 0


# -- 1. no code execution from data ------------------------------------------------------------------

class RunsCode:
    def __reduce__(self):
        return os.system, (f"touch {MARKER}",)


MARKER = None


def test_a_crafted_cifar_batch_cannot_run_code(tmp_path):
    global MARKER
    MARKER = tmp_path / "EXECUTED"
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for name in [f"data_batch_{i}" for i in range(1, 6)]:
        (folder / name).write_bytes(pickle.dumps(good, protocol=2))
    (folder / "test_batch").write_bytes(pickle.dumps({**good, b"labels": RunsCode()}))
    with pytest.raises(ValueError, match=r"asks for (posix|os)\.system, which a CIFAR batch never holds"):
        load_dataset(str(tmp_path))
    assert not MARKER.exists()
    (folder / "test_batch").write_bytes(pickle.dumps({b"labels": [0]}, protocol=2))
    with pytest.raises(ValueError, match="has no 'data' entry"):
        load_pickle_folder(folder)
    (folder / "test_batch").write_bytes(pickle.dumps(good, protocol=2))  # a Python-2-style batch still loads
    assert load_pickle_folder(folder)[0]["test"][0].shape == (2, 32, 32, 3)


# -- 3. corrupt archives are detected -----------------------------------------------------------------

def write_photos(root, rng, per_class):
    """Classes a and b of random 8x8 RGB PNGs."""
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(per_class):
            Image.fromarray(rng.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(root / cls / f"{i}.png")
    return root


def make_archive(tmp_path, rng):
    root = write_photos(tmp_path / "imgs", rng, 3)
    archive = tmp_path / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    return archive


def test_byte_flips_in_an_archive_are_refused_or_harmless(tmp_path, rng):
    archive = make_archive(tmp_path, rng)
    truth = load_image_folder(archive, progress=False)["all"]
    data = archive.read_bytes()
    flipped = tmp_path / "flipped.tar.gz"
    refused = 0
    for pos in np.linspace(10, len(data) - 1, 80).astype(int):
        bad = bytearray(data)
        bad[pos] ^= 0x10
        flipped.write_bytes(bytes(bad))
        try:
            got = load_image_folder(flipped, progress=False)["all"]
        except ValueError as err:
            assert "damaged" in str(err) and "\n" not in str(err)
            refused += 1
        else:  # a flip in a field that changes nothing (e.g. the gzip header's time stamp)
            np.testing.assert_array_equal(got.images, truth.images)
    assert refused >= 70


def test_a_damaged_archive_is_never_cached(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("JAXHASH_CACHE", str(tmp_path / "cache"))
    data = make_archive(tmp_path, rng).read_bytes()
    crc_broken = data[:-8] + bytes(b ^ 0xFF for b in data[-8:-4]) + data[-4:]  # the gzip trailer's CRC
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.tar.gz").write_bytes(crc_broken)
    with pytest.raises(ValueError, match="CRC"):
        load_dataset(str(tmp_path / "data" / "x.tar.gz"))
    assert not (tmp_path / "cache").exists() or not list((tmp_path / "cache").iterdir())


def test_a_damaged_cache_entry_is_rebuilt_with_a_note(tmp_path, rng, monkeypatch):
    monkeypatch.setenv("JAXHASH_CACHE", str(tmp_path / "cache"))
    archive = make_archive(tmp_path, rng)
    first = load_dataset(str(archive), progress=False)
    (entry,) = (tmp_path / "cache").iterdir()
    entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    with pytest.warns(UserWarning, match="discarded a damaged cache entry"):
        again = load_dataset(str(archive), progress=False)
    np.testing.assert_array_equal(again.x_train, first.x_train)
    load_dataset(str(archive), progress=False)  # rebuilt: no note any more


def test_damaged_idx_and_model_files(tmp_path, rng):
    raw = bytes([0, 0, 8, 1]) + (100).to_bytes(4, "big") + bytes(range(100))
    packed = bytearray(gzip.compress(raw))
    packed[len(packed) // 2] ^= 0xFF  # damaged deflate data
    (tmp_path / "x.idx.gz").write_bytes(bytes(packed))
    from jaxhash.data.idx import read_idx

    with pytest.raises(ValueError, match="cannot read IDX file"):
        read_idx(tmp_path / "x.idx.gz")
    model = jaxhash.ITQ(n_bits=8).fit(rng.integers(0, 256, (30, 4, 4, 1)).astype(np.uint8)).save(tmp_path / "m")
    arrays = current_version(model) / "arrays.npz"
    arrays.write_bytes(arrays.read_bytes()[:50])
    with pytest.raises(ValueError, match="arrays.npz is damaged"):
        jaxhash.load_hasher(model)


# -- 4. one line from the command line ----------------------------------------------------------------

def run_cli(argv, capsys):
    code = main(argv)
    err = capsys.readouterr().err.strip()
    return code, err


@pytest.fixture
def cli_setup(tmp_path, rng):
    photos = write_photos(tmp_path / "photos", rng, 4)
    assert main(["fit", "--data", str(photos), "--method", "lsh", "--bits", "8", "--out", str(tmp_path / "m")]) == 0
    assert main(["index", "--model", str(tmp_path / "m"), "--folder", str(photos), "--out", str(tmp_path / "i.jhx")]) == 0
    return tmp_path, photos


def test_bad_command_lines_get_one_line(cli_setup, capsys):
    tmp_path, photos = cli_setup
    m, i, q = str(tmp_path / "m"), str(tmp_path / "i.jhx"), str(photos / "a" / "1.png")
    bomb = tmp_path / "bomb.png"
    fuzz._write_bomb(bomb)
    (tmp_path / "adir").mkdir()
    capsys.readouterr()
    cases = {
        ("search", "--model", m, "--index", i, str(bomb)): "more than",
        ("search", "--model", m, "--index", i, q, "--json", str(tmp_path / "adir")): "is a folder",
        ("index", "--model", m, "--folder", str(photos), "--out", str(tmp_path / "adir")): "is a folder",
        ("benchmark", "--data", str(photos), "--protocol", "4", "--methods", "lsh", "--bits", "100000000"): "at most 524288",
        ("benchmark", "--data", str(photos), "--protocol", "4", "--methods", "dbn-ae", "--preset", "huge"): "choose one of paper, cpu-small, tiny",
        ("search", "--model", m, "--index", str(tmp_path / "adir"), q): "is a folder, not an index file",
    }
    for argv, expected in cases.items():
        code, err = run_cli(list(argv), capsys)
        assert code == 2 and expected in err and "\n" not in err and "Traceback" not in err, (argv, err)
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "adir").iterdir())
    code, _ = run_cli(["search", "--model", m, "--index", i, q, "--k", "1000000000000"], capsys)
    assert code == 0  # clamped to the 8 indexed images


def test_a_decompression_bomb_in_a_folder_is_skipped(cli_setup, capsys):
    tmp_path, photos = cli_setup
    fuzz._write_bomb(photos / "a" / "bomb.png")
    with pytest.warns(UserWarning, match=r"skipped an unreadable or non-image file .*bomb\.png"):
        assert main(["index", "--model", str(tmp_path / "m"), "--folder", str(photos), "--out", str(tmp_path / "j.jhx")]) == 0
    assert jaxhash.read_index(tmp_path / "j.jhx").ntotal == 8


# -- 5. memory follows the work ---------------------------------------------------------------------

def test_a_huge_file_with_wrong_magic_is_refused_before_reading(tmp_path):
    big = tmp_path / "big.jhx"
    with open(big, "wb") as f:
        f.write(b"NOTANIDX" + b"\0" * 8)
        f.truncate(6 << 30)  # sparse: 6 GiB on paper, nothing on disk
    with pytest.raises(IndexFormatError, match="wrong magic"):
        jaxhash.read_index(big)
    with open(big, "r+b") as f:
        f.write(struct.pack("<8sII", b"JAXHASH\0", 2, 1 << 31))
    with pytest.raises(IndexFormatError, match="bad prefix|damaged"):
        jaxhash.read_index(big)


def test_archive_members_that_will_not_be_decoded_are_not_read(tmp_path, rng, monkeypatch):
    archive = tmp_path / "x.tar.gz"
    big = tmp_path / "huge.png"
    big.write_bytes(b"\0" * (3 << 20))
    blob = tmp_path / "blob.bin"
    blob.write_bytes(b"\0" * (3 << 20))
    img = tmp_path / "ok.png"
    Image.fromarray(rng.integers(0, 256, (4, 4, 3)).astype(np.uint8)).save(img)
    with tarfile.open(archive, "w:gz") as tar:
        for p in (big, blob, img):
            tar.add(p, arcname=f"c/{p.name}")
    monkeypatch.setattr(folders, "MAX_IMAGE_FILE_BYTES", 1 << 20)
    reads = []
    real = tarfile.TarFile.extractfile
    monkeypatch.setattr(tarfile.TarFile, "extractfile", lambda self, m: reads.append(m.name) or real(self, m))
    with pytest.warns(UserWarning, match=r"skipped 2 .*c/huge\.png"):
        sets = load_image_folder(archive, progress=False)
    assert sets["all"].paths == ("c/ok.png",) and reads == ["c/ok.png"]


# -- 6. atomic saves --------------------------------------------------------------------------------

SAVER = """
import sys, numpy as np, jaxhash
x = np.random.default_rng(int(sys.argv[2])).integers(0, 256, (40, 4, 4, 1)).astype(np.uint8)
models = [jaxhash.LSH(n_bits=16, seed=s).fit(x) for s in range(3)]
for i in range(int(sys.argv[3])):
    models[i % 3].save(sys.argv[1])
"""

LOADER = """
import sys, time, jaxhash
failures = loads = 0
end = time.time() + float(sys.argv[2])
while time.time() < end:
    try:
        h = jaxhash.load_hasher(sys.argv[1]); assert h.is_fitted; loads += 1
    except Exception as err:
        failures += 1; print(type(err).__name__, err, file=sys.stderr)
print(loads, failures)
"""


def test_concurrent_saves_and_loads_never_see_a_partial_model(tmp_path, rng):
    path = tmp_path / "model"
    jaxhash.LSH(n_bits=16).fit(rng.integers(0, 256, (40, 4, 4, 1)).astype(np.uint8)).save(path)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    writers = [subprocess.Popen([sys.executable, "-c", SAVER, str(path), str(s), "40"], env=env, stderr=subprocess.PIPE, text=True)
               for s in (1, 2)]
    reader = subprocess.run([sys.executable, "-c", LOADER, str(path), "6"], env=env, capture_output=True, text=True)
    for w in writers:
        _, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
    loads, failures = map(int, reader.stdout.split())
    assert loads > 0 and failures == 0, reader.stderr
    jaxhash.load_hasher(path).save(path)  # the writers have exited: their leftover versions go
    versions = [p for p in path.iterdir() if p.name.startswith("v-")]
    assert len(versions) == 2  # the current one and the one it replaced


def test_failed_and_killed_writes_leave_the_previous_file_and_are_cleaned(tmp_path, rng, monkeypatch):
    codes, _ = random_codes(rng, 10, 32)
    index = jaxhash.HashIndex(32)
    index.add(codes)
    path = jaxhash.write_index(index, tmp_path / "i.jhx")
    dead = tmp_path / ".i.jhx.99999999-dead.tmp"  # a writer killed mid-write (no such process)
    dead.write_bytes(b"half")
    live = tmp_path / f".i.jhx.{os.getpid()}-live.tmp"  # one still writing: left alone
    live.write_bytes(b"busy")
    jaxhash.write_index(index, path)
    assert not dead.exists() and live.exists()
    live.unlink()
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # the usual permissions, not 0600
    model = jaxhash.LSH(n_bits=8).fit(rng.integers(0, 256, (20, 4, 4, 1)).astype(np.uint8))
    saved = model.save(tmp_path / "m")
    assert (current_version(saved) / "arrays.npz").stat().st_mode & 0o777 == 0o666 & ~umask
    assert current_version(saved).stat().st_mode & 0o777 == 0o777 & ~umask

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError, match="disk full"):
        jaxhash.LSH(n_bits=8, seed=3).fit(rng.integers(0, 256, (20, 4, 4, 1)).astype(np.uint8)).save(saved)
    assert jaxhash.load_hasher(saved).fingerprint() == model.fingerprint()  # the previous model is intact
    assert len([p for p in saved.iterdir() if p.name.startswith("v-")]) == 1


def test_models_saved_by_jaxhash_0_1_still_load(tmp_path, rng):
    model = jaxhash.ITQ(n_bits=8).fit(rng.integers(0, 256, (20, 4, 4, 1)).astype(np.uint8))
    saved = model.save(tmp_path / "new")
    old = tmp_path / "old"
    old.mkdir()
    for name in ("hasher.json", "arrays.npz"):  # the old layout: files directly in the folder, no fingerprint
        data = (current_version(saved) / name).read_bytes()
        if name == "hasher.json":
            meta = json.loads(data)
            del meta["fingerprint"]
            data = json.dumps(meta).encode()
        (old / name).write_bytes(data)
    assert jaxhash.load_hasher(old).fingerprint() == model.fingerprint()
    model.save(old)  # saving over it switches to the new layout
    assert (old / "CURRENT").exists() and not (old / "hasher.json").exists()


# -- 7. a file's content is checked, not only its checksum -----------------------------------------------

def edited(path, edit, tail=None):
    data = path.read_bytes()
    _, version, header_len = struct.unpack_from("<8sII", data)
    header = json.loads(data[16 : 16 + header_len])
    edit(header)
    raw = json.dumps(header).encode()
    body = struct.pack("<8sII", b"JAXHASH\0", version, len(raw)) + raw + (tail if tail is not None else data[16 + header_len : -32])
    return body + hashlib.sha256(body).digest()


@pytest.mark.parametrize("edit, message", [
    (lambda h: h.update(n_bits=60), "bits set beyond n_bits=60"),
    (lambda h: h.update(n_bits=63.5), "n_bits must be an integer"),
    (lambda h: h.update(n_bits=0), "n_bits must be an integer in"),
    (lambda h: h.update(metadata=5), "metadata must be a JSON object"),
    (lambda h: h.update(metadata="abc"), "metadata must be a JSON object"),
    (lambda h: h.update(metadata=[1, 2]), "metadata must be a JSON object"),
])
def test_header_content_is_validated(tmp_path, rng, edit, message):
    codes = np.full((5, 2), 0xFFFFFFFF, np.uint32)  # all 64 bits set: 60-bit codes would have spare bits set
    index = jaxhash.HashIndex(64)
    index.add(codes)
    path = jaxhash.write_index(index, tmp_path / "i.jhx")
    bad = tmp_path / "bad.jhx"
    bad.write_bytes(edited(path, edit))
    with pytest.raises(IndexFormatError, match=message) as err:
        jaxhash.read_index(bad)
    assert str(bad) in str(err.value)


def test_ids_are_validated(tmp_path, rng):
    codes, _ = random_codes(rng, 3, 32)
    index = jaxhash.HashIndex(32)
    index.add(codes)
    path = jaxhash.write_index(index, tmp_path / "i.jhx")
    body = path.read_bytes()[:-32]
    for ids in ([-1, 1, 2], [0, 0, 2]):
        bad = body[: -24] + np.asarray(ids, "<i8").tobytes()
        (tmp_path / "bad.jhx").write_bytes(bad + hashlib.sha256(bad).digest())
        with pytest.raises(IndexFormatError, match="negative or duplicate ids"):
            jaxhash.read_index(tmp_path / "bad.jhx")


def test_pathological_headers(tmp_path):
    for raw in (b'{"format": "jaxhash-index", "n_bits": Infinity, "n_words": 2, "ntotal": 0}', b"[" * 100_000 + b"]" * 100_000):
        body = struct.pack("<8sII", b"JAXHASH\0", 2, len(raw)) + raw
        (tmp_path / "x.jhx").write_bytes(body + hashlib.sha256(body).digest())
        with pytest.raises(IndexFormatError, match="invalid header"):
            jaxhash.read_index(tmp_path / "x.jhx")


# -- 8. API arguments ---------------------------------------------------------------------------------

def test_api_arguments_are_validated_once(rng):
    x = rng.random((30, 6)).astype(np.float32)
    assert jaxhash.LSH(n_bits=16.0).fit(x).encode(x).shape == (30, 1)
    index = jaxhash.HashIndex(16)
    index.add(jaxhash.LSH(n_bits=16).fit(x).encode(x))
    with pytest.raises(ValueError, match=r"ids must be 64-bit integers, got \[1.5\]"):
        index.remove_ids([1.5])
    assert index.ntotal == 30
    for bad in (None, float("nan"), float("inf")):
        for call in (lambda: index.search(index.codes[:1], bad), lambda: index.range_search(index.codes[:1], bad),
                     lambda: jaxhash.LSH(n_bits=bad).fit(x)):
            with pytest.raises((ValueError, TypeError), match="must be an integer"):
                call()
    with pytest.raises(ValueError, match="standardise them first"):
        jaxhash.ITQ(n_bits=4).fit(x * 1e20)

