"""The ``jaxhash`` command: benchmark, fit, index, search.

    jaxhash benchmark --data mnist --protocol 1k --methods lsh,pcah,sh,itq,sph --bits 16,32,64 --metric map@5000
    jaxhash fit --method itq --bits 64 --data fashion-mnist --out models/itq64
    jaxhash index --model models/itq64 --data fashion-mnist --out fmnist.jhx
    jaxhash index --model models/itq64 --folder ~/photos --out photos.jhx
    jaxhash search --model models/itq64 --index photos.jhx query.jpg --k 10 --grid results.png
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
import warnings
from pathlib import Path

import numpy as np

EPILOG = "Data sets: mnist, fashion-mnist, cifar10, cifar100, digits, tfds:NAME, or a path. See README.md."


def _csv(text: str) -> list[str]:
    return [t.strip() for t in text.split(",") if t.strip()]


def _bits(text: str) -> list[int]:
    try:
        bits = [int(b) for b in _csv(text)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--bits takes comma-separated integers, got {text!r}") from None
    if not bits or any(b <= 0 for b in bits):
        raise argparse.ArgumentTypeError("--bits must list positive code lengths, e.g. 16,32,64")
    return bits


def _add_data_args(p: argparse.ArgumentParser, required: bool = True) -> None:
    p.add_argument("--data", required=required, help="data set name or path (mnist, fashion-mnist, cifar10, digits, tfds:NAME, DIR, FILE.tar.gz)")
    p.add_argument("--data-dir", default=None, help="folder holding the data sets (DIR/mnist/, DIR/cifar10-jpg.tar.gz, ...); else $JAXHASH_DATA")
    p.add_argument("--protocol", default="1k", help="retrieval protocol: 1k (1,000 queries, 100 per class), official, or a query count")
    p.add_argument("--seed", type=int, default=0, help="seed for the protocol split and the hashers")


def _hasher_options(method: str, args) -> dict:
    """Keyword arguments from the command line that this method's hasher accepts."""
    import inspect  # noqa: PLC0415

    from .hashers import make_hasher  # noqa: PLC0415

    accepted = inspect.signature(type(make_hasher(method)).__init__).parameters
    wanted = {"preset": getattr(args, "preset", None), "checkpoint_dir": getattr(args, "checkpoint_dir", None),
              "resume": getattr(args, "resume", False) or None}
    unusable = [k for k, v in wanted.items() if v is not None and k not in accepted]
    if unusable and len(_csv(getattr(args, "methods", method))) == 1:
        raise ValueError(f"method {method!r} takes no {', '.join('--' + k.replace('_', '-') for k in unusable)}")
    return {k: v for k, v in wanted.items() if v is not None and k in accepted}


def _load_split(args):
    from .data import load_dataset, retrieval_split  # noqa: PLC0415

    dataset = load_dataset(args.data, data_dir=args.data_dir)
    return dataset, retrieval_split(dataset, args.protocol, seed=args.seed)


# -- benchmark ------------------------------------------------------------------------------------

def cmd_benchmark(args) -> int:
    from . import metrics  # noqa: PLC0415
    from .data import to_features  # noqa: PLC0415
    from .hashers import make_hasher  # noqa: PLC0415

    metric_names = _csv(args.metric)
    for m in metric_names:
        metrics.parse_metric(m)
    methods = _csv(args.methods)
    for m in methods:
        make_hasher(m)  # fail early on an unknown name
    dataset, split = _load_split(args)
    xq, xd = to_features(split.query_x), to_features(split.db_x)
    print(f"{dataset.name}, protocol {args.protocol}: {len(xq)} queries, {len(xd)} database/training images, {xd.shape[1]} features", flush=True)
    records = []
    table: dict[tuple[str, str], dict[int, float]] = {}
    for method in methods:
        for bits in args.bits:
            hasher = make_hasher(method, n_bits=bits, seed=args.seed, **_hasher_options(method, args))
            t0 = time.perf_counter()
            try:
                hasher.fit(xd)
            except ValueError as err:
                print(f"  {method} @ {bits} bits skipped: {err}", file=sys.stderr)
                continue
            t1 = time.perf_counter()
            cq, cd = hasher.encode(xq), hasher.encode(xd)
            t2 = time.perf_counter()
            for name in metric_names:
                value = metrics.evaluate(name, cq, split.query_y, cd, split.db_y, n_bits=bits)
                t3 = time.perf_counter()
                records.append({"data": dataset.name, "protocol": args.protocol, "method": method, "bits": bits,
                                "metric": name, "value": round(value, 6), "fit_seconds": round(t1 - t0, 3),
                                "encode_seconds": round(t2 - t1, 3), "eval_seconds": round(t3 - t2, 3), "seed": args.seed})
                table.setdefault((method, name), {})[bits] = value
                t2 = t3
            print(f"  {method:>6} {bits:>4} bits: " + ", ".join(f"{n}={table[(method, n)][bits]:.4f}" for n in metric_names)
                  + f"  (fit {t1 - t0:.1f}s)", flush=True)
    print()
    print(_format_table(table, methods, args.bits, metric_names))
    if args.json:
        _write_json(args.json, records)
        print(f"\nwrote {len(records)} records to {args.json}")
    return 0


def _format_table(table, methods, bits_list, metric_names) -> str:
    lines = []
    for name in metric_names:
        header = f"{name:<12}" + "".join(f"{b:>10}" for b in bits_list)
        lines += [header, "-" * len(header)]
        for method in methods:
            row = table.get((method, name), {})
            lines.append(f"{method:<12}" + "".join(f"{row[b]:>10.4f}" if b in row else f"{'-':>10}" for b in bits_list))
        lines.append("")
    return "\n".join(lines).rstrip()


def _write_json(path, records) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(records, indent=2) + "\n")
    os.replace(tmp, path)


# -- fit ------------------------------------------------------------------------------------------

def cmd_fit(args) -> int:
    from .data import to_features  # noqa: PLC0415
    from .hashers import make_hasher  # noqa: PLC0415

    dataset, split = _load_split(args)
    hasher = make_hasher(args.method, n_bits=args.bits, seed=args.seed, **_hasher_options(args.method, args))
    t0 = time.perf_counter()
    hasher.fit(to_features(split.train_x), split.train_y)
    hasher.input_shape_ = tuple(int(s) for s in dataset.image_shape)
    hasher.dataset_ = dataset.name
    hasher.save(args.out)
    print(f"fitted {args.method} ({args.bits} bits) on {len(split.train_x)} images of {dataset.name} in {time.perf_counter() - t0:.1f}s; saved to {args.out}")
    return 0


# -- index ----------------------------------------------------------------------------------------

def _load_model(path):
    from .hashers import load_hasher  # noqa: PLC0415

    hasher = load_hasher(path)
    shape = getattr(hasher, "input_shape_", None)
    return hasher, (tuple(shape) if shape is not None else None)


def _encode_images(hasher, images, batch_size: int = 4096, desc: str = "encoding") -> np.ndarray:
    from .data import to_features  # noqa: PLC0415
    from .progress import progress  # noqa: PLC0415

    parts = []
    for start in progress(range(0, len(images), batch_size), desc=desc, unit=" batches", disable=len(images) <= batch_size):
        parts.append(hasher.encode(to_features(images[start : start + batch_size])))
    return np.concatenate(parts) if parts else np.zeros((0, -(-hasher.n_bits // 32)), np.uint32)


def _load_folder_images(folder, shape):
    from .data import load_image_folder  # noqa: PLC0415

    if shape is None:
        raise ValueError("this model does not record its input image shape; fit it with  jaxhash fit  to index image folders")
    sets = load_image_folder(folder, image_size=shape[:2], channels=shape[2])
    images = np.concatenate([s.images for s in sets.values()])
    paths = [p for s in sets.values() for p in s.paths]
    return images, paths


def cmd_index(args) -> int:
    from .index import HashIndex, write_index  # noqa: PLC0415

    hasher, shape = _load_model(args.model)
    if (args.data is None) == (args.folder is None):
        raise ValueError("give exactly one of --data (a data set's database split) or --folder (a folder or .tar.gz of images)")
    if args.folder:
        images, paths = _load_folder_images(args.folder, shape)
        root = str(Path(args.folder).resolve())
    else:
        _, split = _load_split(args)
        images, paths, root = split.db_x, split.db_paths, None
        if shape is not None and tuple(images.shape[1:]) != shape:
            raise ValueError(f"the model expects {shape} images but {args.data} has {tuple(images.shape[1:])}")
    codes = _encode_images(hasher, images)
    metadata = {"model": str(Path(args.model).resolve())}
    if args.data:
        metadata.update({"data": args.data, "data_dir": args.data_dir and str(Path(args.data_dir).resolve()),
                         "protocol": args.protocol, "seed": args.seed})
    if paths is not None:
        metadata.update({"root": root, "paths": list(paths)})
    index = HashIndex(hasher.n_bits, metadata=metadata)
    index.add(codes)
    write_index(index, args.out)
    print(f"indexed {index.ntotal} images as {hasher.n_bits}-bit codes into {args.out}")
    return 0


# -- search ---------------------------------------------------------------------------------------

def cmd_search(args) -> int:
    from .data.folders import decode_image  # noqa: PLC0415
    from .index import read_index  # noqa: PLC0415

    hasher, shape = _load_model(args.model)
    index = read_index(args.index)
    if index.n_bits != hasher.n_bits:
        raise ValueError(f"the index holds {index.n_bits}-bit codes but the model makes {hasher.n_bits}-bit codes: use the model the index was built with")
    if shape is None:
        raise ValueError("this model does not record its input image shape; fit it with  jaxhash fit")
    queries, names = [], []
    for q in args.queries:
        try:
            queries.append(decode_image(Path(q).read_bytes(), shape[:2], shape[2]))
            names.append(q)
        except FileNotFoundError:
            raise FileNotFoundError(f"query image {q} does not exist") from None
        except (OSError, ValueError, SyntaxError):
            warnings.warn(f"skipped {q}: not a readable image", stacklevel=1)
    if not queries:
        raise ValueError("none of the query images could be read")
    codes = _encode_images(hasher, np.stack(queries))
    dist, ids = index.search(codes, args.k)
    paths = index.metadata.get("paths")
    results = []
    for name, drow, irow in zip(names, dist, ids):
        print(f"query {name}")
        hits = []
        for rank, (d, i) in enumerate(zip(drow, irow), 1):
            if i < 0:
                break
            path = paths[i] if paths is not None and i < len(paths) else None
            hits.append({"rank": rank, "id": int(i), "distance": int(d), "path": path})
            print(f"  {rank:>3}  id {int(i):>8}  distance {int(d):>3}" + (f"  {path}" if path else ""))
        results.append({"query": name, "results": hits})
    if args.json:
        _write_json(args.json, results)
    if args.grid:
        from .plots import draw_result_grid  # noqa: PLC0415

        draw_result_grid(args.grid, queries, names, results, index.metadata, shape)
        print(f"wrote {args.grid}")
    return 0


# -- entry point ----------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxhash", description="Binary hashing and image retrieval in JAX.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("benchmark", help="methods x bits table of a retrieval metric", epilog=EPILOG)
    _add_data_args(p)
    p.add_argument("--methods", default="lsh,pcah,itq,sh,sph", help="comma-separated hashing methods")
    p.add_argument("--bits", type=_bits, default=[16, 32, 64], help="comma-separated code lengths")
    p.add_argument("--metric", default="map@all", help="comma-separated: map@all, map@R, p@K, pr@RADIUS")
    p.add_argument("--json", default=None, help="also write one record per (method, bits, metric) cell here")
    p.add_argument("--preset", default=None, help="size/schedule preset for neural hashers (dbn-ae: tiny, cpu-small, seed)")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("fit", help="train a hasher and save it", epilog=EPILOG)
    _add_data_args(p)
    p.add_argument("--method", default="itq")
    p.add_argument("--bits", type=int, default=64)
    p.add_argument("--out", required=True, help="folder to save the hasher in")
    p.add_argument("--preset", default=None, help="size/schedule preset for neural hashers (dbn-ae: tiny, cpu-small, seed)")
    p.add_argument("--checkpoint-dir", default=None, help="neural hashers: save a checkpoint after every epoch here")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("index", help="encode a data set or an image folder into an index file", epilog=EPILOG)
    _add_data_args(p, required=False)
    p.add_argument("--folder", default=None, help="a folder (or .tar.gz) of images to index instead of --data")
    p.add_argument("--model", required=True, help="folder of a hasher saved by  jaxhash fit")
    p.add_argument("--out", required=True, help="index file to write")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="query images -> ranked ids, paths and distances")
    p.add_argument("queries", nargs="+", help="query image files")
    p.add_argument("--model", required=True)
    p.add_argument("--index", required=True)
    p.add_argument("--k", type=int, default=10)
    p.add_argument("--grid", default=None, help="draw each query beside its results into this PNG")
    p.add_argument("--json", default=None, help="also write the results as JSON")
    p.set_defaults(func=cmd_search)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (FileNotFoundError, FileExistsError, ValueError, TypeError, ImportError, FloatingPointError) as err:
        if os.environ.get("JAXHASH_DEBUG"):
            raise
        print(f"jaxhash {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
