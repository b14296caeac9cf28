#!/usr/bin/env python
"""Fuzz jaxhash's readers and arguments; print, per category, how each try ended.

Every try ends in one of four ways:
  clear    refused with one clear error (the documented exception types: ValueError, TypeError,
           OSError subclasses, IndexFormatError ...), or, for mutations that change nothing that
           matters, read back identical to the original;
  traceback  any other exception -- a bug: the user would see a traceback;
  wrong    read or computed without complaint but different from the truth (silent corruption);
  executed   a crafted pickle ran code.

Categories: index files (truncations, byte flips, appends, header fields edited with the
checksum recomputed), image archives (.tar.gz byte flips and truncations) and the cache of
decoded archives (flips and truncations of its .npz entries), CIFAR pickles
(payloads that call os.system, eval, subprocess, getattr, ...), saved hashers (flips and
truncations of hasher.json / arrays.npz), API arguments (random bad k, n_bits, radius, ids,
features), wide codes (widths around every internal boundary against a NumPy oracle) and the
command line (bad arguments and files, run in-process).

    python scripts/fuzz.py                 # the long run (minutes)
    python scripts/fuzz.py --tries 50      # a quick one
"""
from __future__ import annotations

import argparse
import contextlib
import hashlib
import io
import json
import math
import os
import pickle
import random
import struct
import sys
import tarfile
import tempfile
import traceback
import warnings
from collections import Counter
from pathlib import Path

import numpy as np

from jaxhash.cli import _output_file, _seed, write_json

CLEAR_ERRORS = (ValueError, TypeError, OSError, EOFError)
OUTCOMES = ("tries", "clear", "traceback", "wrong", "executed")


class Tally:
    def __init__(self):
        self.counts: dict[str, Counter] = {}
        self.examples: dict[str, list[str]] = {}

    def add(self, category: str, outcome: str, detail: str = "") -> None:
        c = self.counts.setdefault(category, Counter())
        c["tries"] += 1
        c[outcome] += 1
        if outcome != "clear" and len(self.examples.setdefault(category, [])) < 3:
            self.examples[category].append(detail[-400:])

    def table(self) -> str:
        lines = [f"{'category':<14}" + "".join(f"{o:>11}" for o in OUTCOMES), "-" * (14 + 11 * len(OUTCOMES))]
        for category, c in self.counts.items():
            lines.append(f"{category:<14}" + "".join(f"{c[o]:>11}" for o in OUTCOMES))
        return "\n".join(lines)


def attempt(tally: Tally, category: str, run, check=None, refuse_ok: bool = True):
    """Run ``run()``. A clear error is clear if ``refuse_ok`` (else a valid input was refused:
    wrong); a result is clear if ``check(result)`` is true (no check: any result), else wrong."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = run()
    except CLEAR_ERRORS as err:
        message = str(err)
        if "\n" in message.strip() or not message:
            tally.add(category, "traceback", f"unclear message: {type(err).__name__}: {message!r}")
        else:
            tally.add(category, "clear" if refuse_ok else "wrong", f"refused a valid input: {message}")
        return
    except Exception:  # noqa: BLE001 - anything else is what we are looking for
        tally.add(category, "traceback", traceback.format_exc())
        return
    ok = True if check is None else check(result)
    tally.add(category, "clear" if ok else "wrong", "" if ok else f"accepted: {result!r}"[:400])


# -- index files ----------------------------------------------------------------------------------

def _rehash(data: bytes) -> bytes:
    body = data[:-32]
    return body + hashlib.sha256(body).digest()


def _with_header(data: bytes, edit) -> bytes:
    _, version, header_len = struct.unpack_from("<8sII", data)
    header = json.loads(data[16 : 16 + header_len])
    edit(header)
    raw = json.dumps(header).encode()
    rest = data[16 + header_len :]
    return _rehash(struct.pack("<8sII", b"JAXHASH\0", version, len(raw)) + raw + rest)


HEADER_EDITS = [
    lambda h: h.update(n_bits=60),
    lambda h: h.update(n_bits=63.5),
    lambda h: h.update(n_bits=0),
    lambda h: h.update(n_bits=float("inf")),
    lambda h: h.update(n_bits=None),
    lambda h: h.update(n_bits=10**9),
    lambda h: h.update(n_words=3),
    lambda h: h.update(ntotal=-1),
    lambda h: h.update(ntotal=h["ntotal"] + 1),
    lambda h: h.update(metadata=5),
    lambda h: h.update(metadata="abc"),
    lambda h: h.update(metadata=[1, 2]),
    lambda h: h.update(source={"kind": "folder"}),
    lambda h: h.update(source={"kind": "dataset", "name": "x", "part": "query"}),
    lambda h: h.update(source={"kind": "web"}),
    lambda h: h.update(model={"method": "itq"}),
    lambda h: h.update(model=7),
    lambda h: h.update(format="other"),
    lambda h: h.update(partitioned="yes"),
    lambda h: h.update(partitioned=True),
    lambda h: h.update(feature_dim=0),
    lambda h: h.update(feature_dim=4),
    lambda h: h.clear(),
]


def fuzz_index(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    import jaxhash

    codes = np.asarray(jaxhash.pack_bits(np.random.default_rng(0).integers(0, 2, (40, 60)).astype(bool)))
    index = jaxhash.HashIndex(60)
    index.add(codes)
    original = jaxhash.write_index(index, work / "i.jhx").read_bytes()
    target = work / "m.jhx"

    def same(loaded):
        return np.array_equal(loaded.codes, index.codes) and np.array_equal(loaded.ids, index.ids) and loaded.n_bits == 60

    def consistent(loaded):
        # A file whose checksum was recomputed after an edit is a different, valid index: it may
        # load, but only if everything in it holds (spare bits clear, ids unique and >= 0).
        from jaxhash.checks import check_codes

        check_codes(loaded.codes, loaded.n_bits)
        return loaded.ids.min() >= 0 and np.unique(loaded.ids).size == loaded.ntotal

    mutations = []
    for _ in range(tries):
        kind = rng.choice(["truncate", "flip", "append", "flip-rehash"])
        data = bytearray(original)
        if kind == "truncate":
            data = data[: rng.randrange(len(data))]
        elif kind == "flip":
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        elif kind == "append":
            data += bytes(rng.randrange(256) for _ in range(rng.randrange(1, 64)))
        else:  # a flip in the codes or ids with the checksum recomputed: spare bits, ids
            pos = rng.randrange(len(original) - 32 - 40 * 8 - 40 * 2 * 4, len(original) - 32)
            data[pos] ^= 1 << rng.randrange(8)
            data = bytearray(_rehash(bytes(data)))
        mutations.append((bytes(data), consistent if kind == "flip-rehash" else same))
    mutations += [(_with_header(original, edit), same) for edit in HEADER_EDITS]
    # Ids -1 and duplicates, with a valid checksum.
    ids_at = len(original) - 32 - 40 * 8
    for fake in ([-1] + list(range(1, 40)), [0, 0] + list(range(2, 40))):
        mutations.append((_rehash(original[:ids_at] + np.asarray(fake, "<i8").tobytes() + original[-32:]), same))
    for data, check in mutations:
        target.write_bytes(data)
        attempt(tally, "index file", lambda: jaxhash.read_index(target), check)


# -- archives -------------------------------------------------------------------------------------

def _photo_archive(work: Path, seed: int, per_class: int) -> Path:
    """``work/imgs.tar.gz``: classes a and b of random 8x8 RGB PNGs."""
    from PIL import Image

    root = work / "imgs"
    gen = np.random.default_rng(seed)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            Image.fromarray(gen.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(root / cls / f"{i}.png")
    archive = work / "imgs.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(root, arcname=".")
    return archive


def fuzz_archives(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    from jaxhash.data import load_image_folder

    archive = _photo_archive(work, 1, 4)
    truth = load_image_folder(archive, progress=False)["all"]
    original = archive.read_bytes()
    target = work / "m.tar.gz"
    for _ in range(tries):
        data = bytearray(original)
        if rng.random() < 0.8:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            data = data[: rng.randrange(len(data))]
        target.write_bytes(bytes(data))

        def check(sets):
            got = sets.get("all")
            return got is not None and got.paths == truth.paths and np.array_equal(got.images, truth.images)

        attempt(tally, "archive", lambda: load_image_folder(target, progress=False), check)


def fuzz_cache(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    """Damaged entries of the decoded-archive cache are discarded and rebuilt, never trusted."""
    from jaxhash.data import load_dataset

    archive = _photo_archive(work, 6, 3)
    truth = load_dataset(str(archive), progress=False)
    (entry,) = Path(os.environ["JAXHASH_CACHE"]).glob("imgs.tar.gz.*.npz")
    original = entry.read_bytes()
    for _ in range(tries):
        data = bytearray(original)
        if rng.random() < 0.7:
            data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        else:
            data = data[: rng.randrange(len(data))]
        entry.write_bytes(bytes(data))

        def check(ds):
            return np.array_equal(ds.x_train, truth.x_train) and np.array_equal(ds.y_train, truth.y_train) and ds.paths_train == truth.paths_train

        attempt(tally, "archive cache", lambda: load_dataset(str(archive), progress=False), check)


# -- pickles --------------------------------------------------------------------------------------

class _Payload:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


def fuzz_pickles(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    import builtins
    import importlib
    import subprocess

    from jaxhash.data.cifar import load_pickle_folder

    marker = work / "EXECUTED"
    calls = [
        (os.system, (f"touch {marker}",)),
        (builtins.eval, (f"open({str(marker)!r}, 'w').write('x')",)),
        (builtins.exec, (f"open({str(marker)!r}, 'w').write('x')",)),
        (subprocess.call, (["touch", str(marker)],)),
        (importlib.import_module, ("os",)),
        (np.save, (str(marker), np.zeros(1))),
        (np.load, (str(marker),)),
        (Path.touch, (marker,)),
        (open, (str(marker), "w")),
    ]
    folder = work / "cifar"
    folder.mkdir(exist_ok=True)
    good = {b"data": np.zeros((2, 3072), np.uint8), b"labels": [0, 1]}
    for _ in range(tries):
        func, args = rng.choice(calls)
        protocol = rng.choice([2, 3, 4, 5])
        where = rng.choice(["data", "labels", "top"])
        bad = dict(good)
        payload = _Payload(func, args)
        blob = pickle.dumps(payload if where == "top" else {**bad, where.encode(): payload}, protocol=protocol)
        for name in [f"data_batch_{i}" for i in range(1, 6)]:
            (folder / name).write_bytes(pickle.dumps(good, protocol=protocol))
        (folder / "test_batch").write_bytes(blob)
        marker.unlink(missing_ok=True)
        for p in marker.parent.glob(marker.name + "*"):
            p.unlink()

        def run():
            try:
                return load_pickle_folder(folder)
            finally:
                if marker.exists() or list(marker.parent.glob(marker.name + ".npy")):
                    raise RuntimeError("EXECUTED")

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                run()
            tally.add("pickle", "wrong", f"loaded a batch holding {func.__name__}")
        except RuntimeError as err:
            tally.add("pickle", "executed" if "EXECUTED" in str(err) else "traceback", f"{func.__name__}: {err}")
        except CLEAR_ERRORS:
            tally.add("pickle", "clear")
        except Exception:  # noqa: BLE001
            tally.add("pickle", "traceback", traceback.format_exc())
    # The real thing still loads.
    (folder / "test_batch").write_bytes(pickle.dumps(good, protocol=2))
    attempt(tally, "pickle", lambda: load_pickle_folder(folder), lambda r: r[0]["test"][0].shape == (2, 32, 32, 3))


# -- saved hashers --------------------------------------------------------------------------------

def fuzz_models(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    import jaxhash
    from jaxhash.atomic import current_version

    gen = np.random.default_rng(2)
    x = gen.integers(0, 256, (60, 8, 8, 3)).astype(np.uint8)
    y = np.arange(60) % 3
    models = [jaxhash.ITQ(n_bits=16).fit(x),
              jaxhash.CNNSoftmaxHasher(n_bits=12, preset="tiny", image_size=8, epochs=1, batch_size=16, progress=False).fit(x, y)]
    for m, model in enumerate(models):
        truth = model.encode(x)
        folder = model.save(work / f"model{m}")
        version = current_version(folder)
        originals = {name: (version / name).read_bytes() for name in ("hasher.json", "arrays.npz")}
        for _ in range(tries // len(models)):
            name = rng.choice(list(originals))
            data = bytearray(originals[name])
            if rng.random() < 0.7:
                data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
            else:
                data = data[: rng.randrange(len(data))]
            (version / name).write_bytes(bytes(data))
            attempt(tally, "saved hasher", lambda: jaxhash.load_hasher(folder).encode(x),
                    lambda codes, truth=truth: np.array_equal(codes, truth))
            (version / name).write_bytes(originals[name])


# -- API arguments ----------------------------------------------------------------------------------

BAD_NUMBERS = [None, math.nan, math.inf, -math.inf, -1, 0, 1.5, True, "8", [8], 10**30, -(10**30), 2.0**70]


def fuzz_arguments(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    import jaxhash

    gen = np.random.default_rng(3)
    x = gen.integers(0, 256, (40, 4, 4, 1)).astype(np.uint8)
    codes = np.asarray(jaxhash.pack_bits(gen.integers(0, 2, (40, 32)).astype(bool)))
    labels = gen.integers(0, 3, 40)
    index = jaxhash.HashIndex(32)
    index.add(codes)
    calls = {
        "k": lambda v: index.search(codes[:2], v),
        "knn k": lambda v: jaxhash.knn_search(codes[:2], codes, v),
        "radius": lambda v: index.range_search(codes[:2], v),
        "metric k": lambda v: jaxhash.precision_at_k(codes, labels, codes, labels, v),
        "top": lambda v: jaxhash.mean_average_precision(codes, labels, codes, labels, top=v),
        "pr radius": lambda v: jaxhash.precision_within_radius(codes, labels, codes, labels, 32, v),
        "n_bits": lambda v: jaxhash.LSH(n_bits=v).fit(x),
        "HashIndex": lambda v: jaxhash.HashIndex(v),
        "remove_ids": lambda v: jaxhash.HashIndex(32).remove_ids([v]),
        "batch_size": lambda v: jaxhash.LSH(n_bits=8).fit(x).encode(x, batch_size=v),
    }
    from jaxhash.checks import MAX_BITS

    def valid(name, v):
        if name == "top" and v is None:
            return True
        if name == "remove_ids" and v == [8]:
            return True  # a nested list of ids is flattened
        integral = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) and v == int(v)
        if not integral:
            return False
        if name == "radius":
            return v >= 0
        if name == "pr radius":
            return 0 <= v <= 32
        if name in ("n_bits", "HashIndex"):
            return 1 <= v <= MAX_BITS
        if name == "remove_ids":
            return abs(v) < 2**63
        return v >= 1

    for _ in range(tries):
        name = rng.choice(list(calls))
        value = rng.choice(BAD_NUMBERS)
        ok = valid(name, value)
        attempt(tally, "arguments", lambda: calls[name](value), lambda _, ok=ok: ok, refuse_ok=not ok)
    # Features too large or not finite.
    for scale in (1e20, math.nan, math.inf):
        feats = gen.random((30, 5)).astype(np.float32) * np.float32(scale)
        attempt(tally, "arguments", lambda: jaxhash.ITQ(n_bits=4).fit(feats), lambda _: False)


# -- wide codes -----------------------------------------------------------------------------------

def fuzz_wide_codes(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    import jaxhash
    from jaxhash.checks import MAX_BITS

    widths = [1, 31, 32, 33, 224, 225, 254, 255, 256, 2048, 4096, 8192, 65504, 65505, 65535, 65536, 70_000, MAX_BITS]
    gen = np.random.default_rng(4)
    for t in range(max(len(widths), tries // 10)):
        n_bits = widths[t] if t < len(widths) else rng.choice(widths)
        n = rng.choice([1, 2, 17, 300]) if n_bits > 10_000 else rng.choice([1, 5, 300, 5000, 9000])
        bits = gen.integers(0, 2, (n, n_bits)).astype(bool)
        q_bits = gen.integers(0, 2, (2, n_bits)).astype(bool)
        k = rng.choice([1, 3, 10])

        def run(bits=bits, q_bits=q_bits, k=k, n_bits=n_bits):
            index = jaxhash.HashIndex(n_bits)
            index.add(np.asarray(jaxhash.pack_bits(bits)))
            return index.search(np.asarray(jaxhash.pack_bits(q_bits)), k)

        def check(result, bits=bits, q_bits=q_bits, k=k):
            dist = (q_bits[:, None, :] != bits[None]).sum(-1)
            order = np.argsort(dist, axis=1, kind="stable")[:, :k]
            return np.array_equal(result[1], order) and np.array_equal(result[0], np.take_along_axis(dist, order, 1))

        attempt(tally, "wide codes", run, check)
    attempt(tally, "wide codes", lambda: jaxhash.HashIndex(MAX_BITS + 1), lambda _: False)


# -- the command line -------------------------------------------------------------------------------

def fuzz_cli(tally: Tally, tries: int, rng: random.Random, work: Path) -> None:
    from PIL import Image

    import jaxhash
    from jaxhash.cli import main

    gen = np.random.default_rng(5)
    photos = work / "photos"
    for cls in ("a", "b"):
        (photos / cls).mkdir(parents=True, exist_ok=True)
        for i in range(5):
            Image.fromarray(gen.integers(0, 256, (8, 8, 3)).astype(np.uint8)).save(photos / cls / f"{i}.png")
    bomb = work / "bomb.png"
    _write_bomb(bomb)
    model, index = str(work / "m"), str(work / "i.jhx")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        main(["fit", "--data", str(photos), "--method", "lsh", "--bits", "8", "--out", model])
        main(["index", "--model", model, "--folder", str(photos), "--out", index])
    (work / "dir.jhx").mkdir(exist_ok=True)
    header_inf = work / "inf.jhx"
    header_inf.write_bytes(_with_header(Path(index).read_bytes(), lambda h: h.update(n_bits=float("inf"))))
    deep = work / "deep.jhx"
    raw = Path(index).read_bytes()
    deep.write_bytes(_with_header(raw, lambda h: h.update(metadata=json.loads("[" * 50 + "]" * 50))))
    nested = ("[" * 100_000 + "]" * 100_000).encode()
    deep.write_bytes(_rehash(struct.pack("<8sII", b"JAXHASH\0", 2, len(nested)) + nested + b"\0" * 32))
    q = str(photos / "a" / "1.png")
    cases = [
        ["search", "--model", model, "--index", index, str(bomb)],
        ["search", "--model", model, "--index", index, q, "--k", "1000000000000"],
        ["search", "--model", model, "--index", str(header_inf), q],
        ["search", "--model", model, "--index", str(deep), q],
        ["search", "--model", model, "--index", index, q, "--json", str(work / "dir.jhx")],
        ["search", "--model", model, "--index", index, str(photos)],
        ["search", "--model", model, "--index", str(work / "missing.jhx"), q],
        ["search", "--model", str(work / "missing"), "--index", index, q],
        ["index", "--model", model, "--folder", str(photos), "--out", str(work / "dir.jhx")],
        ["index", "--model", model, "--folder", str(work / "nowhere"), "--out", str(work / "x.jhx")],
        ["benchmark", "--data", str(photos), "--protocol", "4", "--methods", "lsh", "--bits", "100000000"],
        ["benchmark", "--data", str(photos), "--protocol", "4", "--methods", "dbn-ae", "--bits", "8", "--preset", "huge"],
        ["fit", "--data", str(photos), "--method", "nosuch", "--out", str(work / "y")],
        ["fit", "--data", str(bomb), "--method", "lsh", "--out", str(work / "y")],
    ]
    (photos / "a" / "bomb.png").write_bytes(bomb.read_bytes())  # a bomb inside a folder: skipped with a note
    cases.append(["index", "--model", model, "--folder", str(photos), "--out", str(work / "z.jhx")])
    for argv in cases + [rng.choice(cases) for _ in range(max(0, tries // 10 - len(cases)))]:
        err = io.StringIO()
        try:
            with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                code = main(argv)
        except BaseException:  # noqa: BLE001
            tally.add("command line", "traceback", f"{argv}: {traceback.format_exc()}")
            continue
        text = err.getvalue().strip()
        expected_ok = argv[-1].endswith("z.jhx") or "1000000000000" in argv
        if expected_ok:
            tally.add("command line", "clear" if code == 0 else "wrong", f"{argv}: exit {code}: {text}")
        elif code == 2 and text.count("\n") == 0 and "Traceback" not in text:
            tally.add("command line", "clear")
        else:
            tally.add("command line", "traceback" if "Traceback" in text else "wrong", f"{argv}: exit {code}: {text}")
    leftovers = [p.name for p in work.glob(".*.tmp")]
    if leftovers:
        tally.add("command line", "wrong", f"temporary files left behind: {leftovers}")


def _write_bomb(path: Path) -> None:
    """A PNG that declares 50,000 x 50,000 pixels in a few kilobytes."""
    import zlib

    width = height = 50_000

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    idat = zlib.compress(b"\0" * 1000)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


CATEGORIES = {"index": fuzz_index, "archive": fuzz_archives, "cache": fuzz_cache, "pickle": fuzz_pickles, "model": fuzz_models,
              "arguments": fuzz_arguments, "wide": fuzz_wide_codes, "cli": fuzz_cli}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tries", type=int, default=2000, help="mutations per category (default: %(default)s)")
    parser.add_argument("--only", default=None, help=f"comma-separated categories: {', '.join(CATEGORIES)}")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--json", default=None, type=_output_file, help="write the counts and up to 3 examples per bad outcome here")
    args = parser.parse_args(argv)
    os.environ.setdefault("JAXHASH_PROGRESS", "0")
    tally = Tally()
    rng = random.Random(args.seed)
    chosen = args.only.split(",") if args.only else list(CATEGORIES)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["JAXHASH_CACHE"] = str(Path(tmp) / "cache")
        for name in chosen:
            work = Path(tmp) / name
            work.mkdir()
            CATEGORIES[name](tally, args.tries, rng, work)
            print(f"{name}: {dict(tally.counts.get(list(tally.counts)[-1], {}))}", file=sys.stderr, flush=True)
    print(tally.table())
    bad = {k: v for k, v in tally.examples.items() if v}
    for category, examples in bad.items():
        print(f"\n{category}: first problems")
        for e in examples:
            print("  " + e.replace("\n", "\n  "))
    if args.json:
        write_json(args.json, {"counts": {k: dict(v) for k, v in tally.counts.items()}, "examples": tally.examples})
    return 1 if any(c["traceback"] or c["wrong"] or c["executed"] for c in tally.counts.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
