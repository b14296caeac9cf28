#!/usr/bin/env python
"""A folder of real photos, through the command line only: precision@10 of a CNN hasher beside ITQ on pixels.

Takes a folder (or .tar.gz) of ``class/*.jpg`` photos, holds out ``--queries`` photos per class,
and then, as a user would, runs ``jaxhash fit`` on the rest, ``jaxhash index --folder`` on the
rest and ``jaxhash search --json`` with the held-out photos. Precision@10 is the share of each
query's 10 results filed under the query's class folder. With ``--mixed`` some training photos are
upscaled, some saved as PNG and some turned grey first, to show that sizes and channels do not matter.

    python scripts/photo_folder.py ../shared/data/tiny-imagenet-40.tar.gz --json results/photo_folder.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image
from jaxhash.cli import _output_file, _positive, _seed, run_script, write_json


def unpack(source: Path, work: Path) -> Path:
    if source.is_dir():
        return source
    target = work / "unpacked"
    try:
        with tarfile.open(source) as tar:
            tar.extractall(target, filter="data")
    except tarfile.TarError:
        raise ValueError(f"{source} is neither a folder nor a readable .tar.gz of photos") from None
    # an archive of one top folder (photos/class/*.jpg) holds its classes one level down
    inside = [p for p in target.iterdir()]
    return inside[0] if len(inside) == 1 and inside[0].is_dir() and any(p.is_dir() for p in inside[0].iterdir()) else target


def split_folder(root: Path, work: Path, per_class: int, seed: int, mixed: bool, named: str):
    """Copy ``root``'s class folders into ``work/train`` and ``work/queries`` (``per_class`` each); ``named``: the
    folder or archive as the user gave it, for messages."""
    rng = np.random.default_rng(seed)
    train, queries = work / "train", work / "queries"
    n_train = 0
    classes = sorted(p for p in root.iterdir() if p.is_dir())
    if len(classes) < 2:
        raise ValueError(f"{named} holds {len(classes)} class folder{'s' if len(classes) != 1 else ''}: it needs one sub-folder "
                         "of photos per class, two classes or more")
    fewest = min(classes, key=lambda c: sum(f.is_file() for f in c.iterdir()))
    n_fewest = sum(f.is_file() for f in fewest.iterdir())
    if n_fewest < per_class + 2:
        raise ValueError(f"class {fewest.name} has {n_fewest} photos: --queries {per_class} must leave at least 2 of each class "
                         f"to train on" + (f"; use --queries {n_fewest - 2} or fewer" if n_fewest > 2 else ""))
    for c in classes:
        files = sorted(f for f in c.iterdir() if f.is_file())
        held = set(rng.choice(len(files), min(per_class, len(files) - 1), replace=False).tolist())
        for i, f in enumerate(files):
            target = (queries if i in held else train) / c.name / f.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if i in held or not mixed or i % 4 == 0:
                target.write_bytes(f.read_bytes())
            else:
                with Image.open(f) as img:
                    if i % 4 == 1:  # larger
                        img.resize((img.width * 2 + 8, img.height * 2)).save(target)
                    elif i % 4 == 2:  # PNG
                        img.save(target.with_suffix(".png"))
                    else:  # grey
                        img.convert("L").save(target)
            n_train += i not in held
    return train, queries, len(classes), n_train


def jaxhash(*args) -> str:
    cmd = [sys.executable, "-m", "jaxhash.cli", *map(str, args)]
    result = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "JAXHASH_PROGRESS": "0"})
    if result.returncode != 0:
        sys.exit(f"{' '.join(cmd)} failed:\n{result.stderr}")
    return result.stdout


def precision_at_10(results) -> float:
    return float(np.mean([np.mean([hit.get("same_class", False) for hit in r["results"][:10]]) for r in results]))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", help="a folder or .tar.gz of class/*.jpg photos")
    parser.add_argument("--queries", type=_positive, default=10, help="held-out photos per class (default: %(default)s)")
    parser.add_argument("--method", default="cnn-hash", help="the neural method (default: %(default)s)")
    parser.add_argument("--preset", default="cpu", help="its preset (default: %(default)s)")
    parser.add_argument("--bits", type=_positive, default=64)
    parser.add_argument("--epochs", type=_positive, default=None, help="override the preset's epochs")
    parser.add_argument("--pixel-size", type=_positive, default=32, help="image size for ITQ on pixels (default: %(default)s)")
    parser.add_argument("--mixed", action="store_true", help="upscale some, save some as PNG, make some grey")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()
    record = {"folder": args.folder, "method": args.method, "preset": args.preset, "bits": args.bits, "mixed": args.mixed}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        train, queries, n_classes, n_train = split_folder(unpack(Path(args.folder), work), work, args.queries, args.seed, args.mixed,
                                                            args.folder)
        query_files = sorted(str(p) for p in queries.rglob("*") if p.is_file())
        record.update(classes=n_classes, training_photos=n_train, queries=len(query_files))
        print(f"{n_classes} classes: {n_train} photos to fit and index, {len(query_files)} held-out queries", flush=True)
        runs = {args.method: ["--method", args.method, "--preset", args.preset] + (["--epochs", args.epochs] if args.epochs else []),
                "itq (pixels)": ["--method", "itq", "--image-size", args.pixel_size]}
        for name, options in runs.items():
            model, index, out = work / f"m-{len(record)}", work / f"i-{len(record)}.jhx", work / f"r-{len(record)}.json"
            t0 = time.perf_counter()
            fit_output = jaxhash("fit", "--data", train, "--bits", args.bits, "--out", model, *options)
            fit_seconds = time.perf_counter() - t0
            jaxhash("index", "--model", model, "--folder", train, "--out", index)
            jaxhash("search", "--model", model, "--index", index, *query_files, "--k", 10, "--json", out)
            p10 = precision_at_10(json.loads(out.read_text()))
            record[name] = {"p10": p10, "fit_seconds": round(fit_seconds, 1), "fit_output": fit_output.strip()}
            print(f"{name}: P@10 {p10:.4f} (fit {fit_seconds:.0f}s; chance {1 / n_classes:.3f})", flush=True)
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    run_script(main)
