"""The ``jaxhash`` command: benchmark, fit, index, search.

    jaxhash benchmark --data mnist --protocol 1k --methods lsh,pcah,sh,itq,sph --bits 16,32,64 --metric map@5000
    jaxhash fit --method itq --bits 64 --data fashion-mnist --out models/itq64
    jaxhash index --model models/itq64 --data fashion-mnist --out fmnist.jhx
    jaxhash index --model models/itq64 --folder ~/photos --out photos.jhx
    jaxhash search --model models/itq64 --index photos.jhx query.jpg --k 10 --grid results.png

Only the standard library is imported to parse the command line; NumPy, JAX and a method's own
dependencies (Flax, Optax for neural methods) are imported by the command that needs them.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import re
import sys
import time
import warnings
from pathlib import Path

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


def _positive(text: str) -> int:
    from .checks import check_positive_int  # noqa: PLC0415 - NumPy only

    try:
        return check_positive_int(int(text), "the value")
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a non-negative integer (a random seed), got {text!r}")
    return value


def _unit_interval(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"expected a number from 0 to 1, got {text!r}")
    return value


def _positive_list(text: str) -> list[int]:
    return [_positive(part) for part in _csv(text)] or [_positive(text)]


# What ends a command or a script with one line (exit status 2) rather than a traceback.
USER_ERRORS = (OSError, ValueError, TypeError, ImportError, FloatingPointError, MemoryError)


def _error_message(err: BaseException) -> str:
    """The one line a command or script prints for one of :data:`USER_ERRORS`."""
    message = str(err) or type(err).__name__
    if isinstance(err, MemoryError):
        return f"out of memory ({message}): use smaller inputs, fewer bits or a smaller --k"
    if isinstance(err, OSError) and err.filename is not None and err.strerror:
        return f"{err.strerror}: {err.filename}"  # the system's words, without the errno prefix
    return message


def run_script(main) -> None:
    """Run a script's ``main``: a bad value, a missing file or a missing extra ends it with one line and
    exit status 2, as the commands do, instead of a traceback (``JAXHASH_DEBUG=1`` keeps the traceback)."""
    try:
        main()
    except USER_ERRORS as err:
        if os.environ.get("JAXHASH_DEBUG"):
            raise
        print(f"{Path(sys.argv[0]).name}: error: {_error_message(err)}", file=sys.stderr)
        sys.exit(2)


def _image_size(text: str) -> tuple[int, int]:
    parts = text.lower().replace("*", "x").split("x")
    try:
        size = tuple(int(p) for p in parts)
    except ValueError:
        size = ()
    if len(size) == 1:
        size = size * 2
    if len(size) != 2 or min(size) <= 0:
        raise argparse.ArgumentTypeError(f"--image-size takes SIZE or HEIGHTxWIDTH in pixels (e.g. 64 or 64x48), got {text!r}")
    return size


def check_output_file(text: str) -> str:
    """Refuse a file that is written after the work (``--json``) at once, if it cannot be, rather than after a long
    run (an OSError that says why). Missing folders on the way are created when it is written, as for ``--out``."""
    path = Path(text).expanduser()
    if path.is_dir():
        raise IsADirectoryError(f"{text} is a folder: give a file name, e.g. {path / 'results.json'}")
    existing = next(p for p in (path.parent, *path.parent.parents) if p.exists())
    if not existing.is_dir():
        raise NotADirectoryError(f"cannot write {text}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write {text}: no permission to write in {existing}")
    return text


def _output_file(text: str) -> str:
    """:func:`check_output_file` as an argparse type (scripts)."""
    try:
        return check_output_file(text)
    except OSError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _add_data_args(p: argparse.ArgumentParser, required: bool = True, protocol_default: str | None = "1k",
                   protocol_help: str = "", protocol: bool = True) -> None:
    p.add_argument("--data", required=required, metavar="NAME|PATH",
                   help="data set name or path: mnist, fashion-mnist, cifar10, cifar100, digits, tfds:NAME, an image folder "
                        "(class/*.jpg or train|test/class/*.jpg) or such a folder as .tar.gz")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="folder holding the named data sets (DIR/mnist/, DIR/cifar10-jpg.tar.gz, ...); default $JAXHASH_DATA")
    if protocol:
        p.add_argument("--protocol", default=protocol_default, metavar="P",
                       help=protocol_help or "retrieval protocol: 1k (1,000 queries, 100 per class, the rest is the database), "
                                              "official (test split as queries), or a query count such as 500 (default: %(default)s)")
    p.add_argument("--seed", type=_seed, default=0,
                   help=("seed of the protocol's query draw and of the hashers" if protocol else "seed of the models, "
                         "reductions and clusterings") + " (default: %(default)s)")
    p.add_argument("--image-size", type=_image_size, default=None, metavar="SIZE",
                   help="resize every image to SIZE or HEIGHTxWIDTH pixels on loading (needed for folders of mixed sizes)")


def _init_options(cls) -> dict:
    """The keyword arguments a hasher class's constructor takes."""
    import inspect  # noqa: PLC0415

    return inspect.signature(cls.__init__).parameters


def _takes_checkpoints(method: str) -> bool:
    from .hashers import hasher_class  # noqa: PLC0415

    try:
        return "checkpoint_dir" in _init_options(hasher_class(method))
    except ValueError:  # an unknown method never started
        return False


def _hasher_options(method: str, args, single_method: bool = True) -> dict:
    """Keyword arguments from the command line that this method's hasher accepts."""
    from .hashers import hasher_class  # noqa: PLC0415

    cls = hasher_class(method)
    accepted = _init_options(cls)
    wanted = {"preset": getattr(args, "preset", None), "checkpoint_dir": getattr(args, "checkpoint_dir", None),
              "resume": getattr(args, "resume", False) or None, "mode": getattr(args, "mode", None),
              "epochs": getattr(args, "epochs", None), "weights": getattr(args, "weights", None),
              "batch_size": getattr(args, "batch_size", None), "learning_rate": getattr(args, "learning_rate", None),
              "data_parallel": getattr(args, "data_parallel", False) or None,
              "architecture": getattr(args, "architecture", None)}
    unusable = [k for k, v in wanted.items() if v is not None and k not in accepted]
    if unusable and single_method:
        raise ValueError(f"method {method!r} takes no {', '.join('--' + k.replace('_', '-') for k in unusable)}")
    presets = getattr(cls, "presets", None)
    known = (*(presets or ()), *getattr(cls, "preset_aliases", ()))
    if wanted["preset"] is not None and presets is not None and wanted["preset"] not in known:
        raise ValueError(f"unknown --preset {wanted['preset']!r} for {method}; choose one of {', '.join(presets)}")
    return {k: v for k, v in wanted.items() if v is not None and k in accepted}


def _load_dataset(args, mixed_sizes: str = "refuse", resized: dict | None = None):
    from .data import load_dataset  # noqa: PLC0415

    return load_dataset(args.data, data_dir=args.data_dir, image_size=args.image_size, mixed_sizes=mixed_sizes,
                        resized=resized)


def _load_at_model_size(args, model_size, mixed_sizes: str = "refuse"):
    """The data set of ``args``, at the model's input ``(H, W)`` unless ``--image-size`` chose one: a folder of
    mixed sizes is then read at the model's size, and a data set of another size is resized with one note."""
    if args.image_size is not None or model_size is None:
        return _load_dataset(args, mixed_sizes)
    args.image_size = tuple(model_size)
    resized = {}
    dataset = _load_dataset(args, mixed_sizes, resized)
    if resized:
        h, w, _ = resized["from"]
        warnings.warn(f"the images of {args.data} are {h}x{w}: resized to the model's input size "
                      f"{model_size[0]}x{model_size[1]}", stacklevel=3)
    return dataset


def _load_split(args):
    from .data import retrieval_split  # noqa: PLC0415

    dataset = _load_dataset(args)
    return dataset, retrieval_split(dataset, args.protocol, seed=args.seed)


# -- benchmark ------------------------------------------------------------------------------------

def cmd_benchmark(args) -> int:
    import numpy as np  # noqa: PLC0415

    from . import metrics  # noqa: PLC0415
    from .data import _parse_protocol  # noqa: PLC0415
    from .hashers import make_hasher  # noqa: PLC0415

    from .checks import check_n_bits  # noqa: PLC0415

    metric_names = _csv(args.metric)
    for bits in args.bits:
        check_n_bits(bits)
    for m in metric_names:
        kind, value = metrics.parse_metric(m)
        if kind == "pr" and value > min(args.bits):
            raise ValueError(f"--metric {m} asks for a Hamming radius of {value}, more than the {min(args.bits)} bits of the "
                             f"shortest code: use pr@{min(args.bits)} or less")
    methods = _csv(args.methods)
    if not methods:
        raise ValueError("--methods names no method: give at least one, e.g. --methods lsh,itq")
    options = {m: _hasher_options(m, args, single_method=len(methods) == 1) for m in methods}  # fail early on a bad name
    dataset, split = _load_split(args)
    n_features = 1
    for s in split.db_x.shape[1:]:
        n_features *= int(s)
    asked = _parse_protocol(args.protocol)  # None: the official split
    drawn = (f" ({asked} asked: the same number from each of the {len(np.unique(split.query_y))} classes)"
             if asked is not None and asked != len(split.query_x) else "")
    print(f"{dataset.name}, protocol {args.protocol}: {len(split.query_x)} queries{drawn}, {len(split.db_x)} database/training images "
          f"of shape {tuple(split.db_x.shape[1:])} ({n_features} values)", flush=True)
    records = []
    table: dict[tuple[str, str], dict[int, float]] = {}
    for method in methods:
        for bits in args.bits:
            hasher = make_hasher(method, n_bits=bits, seed=args.seed, **options[method])
            t0 = time.perf_counter()
            try:
                hasher.fit(split.db_x, split.db_y)
                t1 = time.perf_counter()
                cq, cd = hasher.encode(split.query_x), hasher.encode(split.db_x)
                encode_seconds = time.perf_counter() - t1
                note = _same_code_note(hasher, cd, bits)
                if note:
                    print(f"  note: {note}", file=sys.stderr)
                cell = []
                for name in metric_names:
                    t2 = time.perf_counter()
                    value = metrics.evaluate(name, cq, split.query_y, cd, split.db_y, n_bits=bits)
                    cell.append({"data": dataset.name, "protocol": args.protocol, "method": method, "bits": bits,
                                 "metric": name, "value": round(value, 6), "fit_seconds": round(t1 - t0, 3),
                                 "encode_seconds": round(encode_seconds, 3), "eval_seconds": round(time.perf_counter() - t2, 3),
                                 "seed": args.seed})
            except ValueError as err:
                print(f"  {method} @ {bits} bits skipped: {err}", file=sys.stderr)
                continue
            except Exception as err:  # noqa: BLE001 - out of host or accelerator memory: the rows measured so far are kept
                if not _out_of_memory(err):
                    raise
                print(f"  {method} @ {bits} bits skipped: out of memory (use shorter codes or a smaller data set)", file=sys.stderr)
                continue
            records.extend(cell)
            for record in cell:
                table.setdefault((method, record["metric"]), {})[bits] = record["value"]
            print(f"  {method:>6} {bits:>4} bits: " + ", ".join(f"{n}={table[(method, n)][bits]:.4f}" for n in metric_names)
                  + f"  (fit {t1 - t0:.1f}s)", flush=True)
    if not records:
        raise ValueError("every method and code length was skipped (see the reasons above)")
    print()
    print(_format_table(table, methods, args.bits, metric_names))
    if args.json:
        write_json(args.json, records)
        print(f"\nwrote {len(records)} record{'s' if len(records) != 1 else ''} to {args.json}")
    return 0


def _out_of_memory(err: BaseException) -> bool:
    """Whether ``err`` is running out of host memory or of an accelerator's (XLA's RESOURCE_EXHAUSTED)."""
    return isinstance(err, MemoryError) or (type(err).__name__ == "JaxRuntimeError" and "RESOURCE_EXHAUSTED" in str(err))


def _same_code_note(hasher, codes, bits: int | None = None, command: str = "benchmark") -> str | None:
    """A note when every one of (more than one) ``codes`` is the same: such a model tells no images apart."""
    import numpy as np  # noqa: PLC0415

    if len(codes) < 2 or np.any(codes != codes[0]):
        return None
    at = f" at {bits} bits" if bits is not None else ""
    said = f"{hasher.method}{at} gives all {len(codes)} images the same code, so it tells none of them apart"
    if not hasattr(hasher, "preset"):
        return f"{said}: use another method or code length"
    where = "" if command == "benchmark" else " (jaxhash fit)"
    return f"{said}: its training has not learned this data; train it again{where} with more --epochs or another --preset"


def _format_table(table, methods, bits_list, metric_names) -> str:
    lines = []
    width = max([12] + [len(m) + 1 for m in methods])  # names like cnn-hash-frozen keep the columns aligned
    for name in metric_names:
        header = f"{name:<{width}}" + "".join(f"{b:>10}" for b in bits_list)
        lines += [header, "-" * len(header)]
        for method in methods:
            row = table.get((method, name), {})
            lines.append(f"{method:<{width}}" + "".join(f"{row[b]:>10.4f}" if b in row else f"{'-':>10}" for b in bits_list))
        lines.append("")
    return "\n".join(lines).rstrip()


def write_json(path, records) -> None:
    """Write ``records`` as indented JSON, atomically (a crash keeps the previous file); NumPy numbers are written
    as the Python numbers they hold."""
    from .atomic import atomic_write  # noqa: PLC0415

    def plain(value):
        if hasattr(value, "item") and getattr(value, "ndim", None) == 0:
            return value.item()
        raise TypeError(f"{type(value).__name__} cannot be written as JSON")

    atomic_write(path, [(json.dumps(records, indent=2, default=plain) + "\n").encode()])


# -- fit ------------------------------------------------------------------------------------------

def cmd_fit(args) -> int:
    from .data import dataset_part  # noqa: PLC0415
    from .hashers import make_hasher  # noqa: PLC0415

    if args.resume and args.checkpoint_dir is None:
        raise ValueError("--resume continues from checkpoints: give the folder the interrupted run saved them in, "
                         "--checkpoint-dir DIR --resume")
    hasher = make_hasher(args.method, n_bits=args.bits, seed=args.seed, **_hasher_options(args.method, args))
    # an image model resizes every image anyway: mixed sizes go to the most common, with one note. A pixel hasher's
    # features depend on the size: the user chooses it (the error says how)
    dataset = _load_at_model_size(args, hasher.input_size(), "most common" if hasher.consumes == "images" else "refuse")
    part = "train" if args.protocol is None else "database"
    images, labels, _ = dataset_part(dataset, part, args.protocol, args.seed)
    if part == "train":
        what = "training images" if len(dataset.x_test) else "images"
    else:
        what = f"database images of protocol {args.protocol}"
    t0 = time.perf_counter()
    hasher.fit(images, labels)
    hasher.save(args.out)
    accuracy = getattr(hasher, "validation_accuracy_", None)
    held_out = f"; validation accuracy {accuracy:.4f} on a held-out split" if accuracy is not None else ""
    shape = "x".join(map(str, images.shape[1:]))
    model_shape = getattr(hasher, "input_shape_", None)
    if model_shape is not None and tuple(model_shape) != tuple(images.shape[1:]):
        shape += f", at the model's input {'x'.join(map(str, model_shape))}"
    print(f"fitted {args.method} ({args.bits} bits) on the {len(images)} {what} of {dataset.name} ({shape}) in "
          f"{time.perf_counter() - t0:.1f}s{held_out}; saved to {args.out}")
    return 0


# -- index ----------------------------------------------------------------------------------------

def _load_image_model(path):
    """A saved hasher that can encode pictures (it was fitted on images, so it knows their shape)."""
    from .hashers import load_hasher  # noqa: PLC0415

    hasher = load_hasher(path)
    if hasher.input_shape_ is None:
        raise ValueError(f"the model in {path} was fitted on feature vectors, so it cannot encode images: "
                         "fit it on images (jaxhash fit, or hasher.fit(images) in Python)")
    return hasher


def cmd_index(args) -> int:
    import numpy as np  # noqa: PLC0415

    from .data import DatasetSource, FolderSource, dataset_part, load_image_folder  # noqa: PLC0415
    from .index import HashIndex, ModelRef, MultiIndexHashIndex, PartitionedIndex, write_index  # noqa: PLC0415

    if args.partitioned:
        if args.type not in (None, "partitioned"):
            raise ValueError(f"--partitioned and --type {args.type} disagree: give one of them")
        args.type = "partitioned"
    args.type = args.type or "flat"
    if args.substrings is not None and args.type != "mih":
        raise ValueError("--substrings sets up a multi-index: add --type mih")
    if (args.data is None) == (args.folder is None):
        raise ValueError("give exactly one of --data (a data set) or --folder (a folder or .tar.gz of images)")
    if args.folder and (args.protocol is not None or args.image_size is not None):
        raise ValueError("--protocol and --image-size apply to --data; a --folder is indexed whole, at the model's input size")
    hasher = _load_image_model(args.model)
    if args.substrings is not None:
        MultiIndexHashIndex(hasher.n_bits, substrings=args.substrings)  # an impossible split is refused before encoding
    if args.type == "partitioned" and not hasattr(hasher, "predict_proba"):
        raise ValueError(f"a partitioned index files images under the class the model predicts, and {hasher.method} "
                         "predicts no classes: use cnn-softmax or cnn-hash, or build a flat index (no --partitioned or --type partitioned)")
    shape = hasher.input_shape_
    if args.folder:
        sets = load_image_folder(args.folder, image_size=shape[:2], channels=shape[2])
        images = np.concatenate([s.images for s in sets.values()])
        source = FolderSource(str(Path(args.folder).resolve()), tuple(p for s in sets.values() for p in s.paths))
    else:
        dataset = _load_at_model_size(args, shape[:2])
        part = "train" if args.protocol is None else "database"
        images, _, paths = dataset_part(dataset, part, args.protocol, args.seed)
        if paths is not None and dataset.root is not None:  # files: the index points at them directly
            source = FolderSource(dataset.root, tuple(paths))
        else:
            spec = args.data if not Path(args.data).expanduser().exists() else str(Path(args.data).expanduser().resolve())
            source = DatasetSource(spec, args.data_dir and str(Path(args.data_dir).resolve()), part, args.protocol,
                                   args.seed, args.image_size)
    encoded = hasher.encode_details(images, progress=True)
    note = _same_code_note(hasher, encoded["codes"], command="index")
    if note:
        warnings.warn(note, stacklevel=2)
    features = encoded.get("features")  # kept for two-stage search (--rerank) when the model has them
    options = {"source": source, "model": ModelRef.of(hasher, args.model),
               "feature_dim": None if features is None else features.shape[1]}
    if args.type == "partitioned":
        index = PartitionedIndex(hasher.n_bits, **options)
        index.add(encoded["codes"], features=features, partitions=np.argmax(encoded["probabilities"], axis=1))
        used, n_classes = len(np.unique(index.partitions)), encoded["probabilities"].shape[1]
        kind = f"partitioned by predicted class ({used} partition{'s' if used != 1 else ''} of {n_classes} classes)"
        if used == 1 < min(n_classes, index.ntotal):
            warnings.warn("the model predicts the same class for every image: it has not learned to tell your "
                          f"{n_classes} classes apart, so the index is one partition and --top-classes narrows nothing; "
                          "train it longer (--epochs) or with more images per class", stacklevel=2)
    elif args.type == "mih":
        index = MultiIndexHashIndex(hasher.n_bits, substrings=args.substrings, **options)
        index.add(encoded["codes"], features=features)
        kind = f"multi-index, {len(index.tables().bounds) - 1} substrings"
    else:
        index = HashIndex(hasher.n_bits, **options)
        index.add(encoded["codes"], features=features)
        kind = "flat"
    write_index(index, args.out)
    extra = f", with {features.shape[1]}-dim features for --rerank" if features is not None else ""
    print(f"indexed {index.ntotal} image{'' if index.ntotal == 1 else 's'} as {hasher.n_bits}-bit codes into {args.out} ({kind}{extra})")
    return 0


# -- search ---------------------------------------------------------------------------------------

def _read_queries(paths, shape, thumbnails: list | None = None):
    """The query images at the model's input ``shape``, and their names; with ``thumbnails`` (a list), each
    query's own picture fitted to a result-grid cell is appended there too, from the same bytes."""
    from .images import alpha_note, decode_image  # noqa: PLC0415

    queries, names, problems, decoded = [], [], [], {}
    for q in paths:
        path = Path(q)
        if path.is_dir():
            raise IsADirectoryError(f"query {q} is a folder: pass image files (e.g. {path / '*.jpg'}), or index the "
                                    "folder with  jaxhash index --folder")
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise FileNotFoundError(f"query image {q} does not exist") from None
        try:
            queries.append(decode_image(data, shape[:2], shape[2], counts=decoded))
            names.append(q)
            if thumbnails is not None:
                from .plots import fit_to_cell  # noqa: PLC0415

                thumbnails.append(fit_to_cell(decode_image(data)))
        except (OSError, ValueError, SyntaxError) as err:
            reason = str(err) if isinstance(err, ValueError) and "pixels" in str(err) else "not a readable image"
            problems.append(f"{q}: {reason}")
    if not queries:
        raise ValueError(f"no query image could be read ({'; '.join(problems)})")
    for problem in problems:
        warnings.warn(f"skipped {problem}", stacklevel=1)
    note = alpha_note(decoded.get("alpha", 0), "query images")
    if note:
        warnings.warn(note, stacklevel=1)
    return queries, names


def cmd_search(args) -> int:
    import numpy as np  # noqa: PLC0415

    from .data.source import source_entries  # noqa: PLC0415
    from .index import read_index  # noqa: PLC0415

    from .index import MultiIndexHashIndex, PartitionedIndex  # noqa: PLC0415

    hasher = _load_image_model(args.model)
    index = read_index(args.index)
    index.check_model(hasher)
    if args.top_classes is not None and not isinstance(index, PartitionedIndex):
        raise ValueError("--top-classes needs a partitioned index: build it with  jaxhash index --partitioned")
    if args.rerank is not None and index.features is None:
        raise ValueError("this index keeps no features to re-rank by: build it with a cnn-hash, cnn-softmax, vae, sparse-ae, ae or patches model")
    if args.shard:
        if isinstance(index, (PartitionedIndex, MultiIndexHashIndex)):  # the library's reason names its classes
            built_as = "--partitioned" if isinstance(index, PartitionedIndex) else "--type mih"
            raise ValueError(f"--shard splits a flat index over devices, and {args.index} was built with {built_as}: drop "
                             f"--shard, or rebuild the index with  jaxhash index  without {built_as}")
        index.shard()
    thumbnails = [] if args.grid is not None else None  # the queries as the grid draws them: their own shape
    queries, names = _read_queries(args.queries, hasher.input_shape_, thumbnails)
    encoded = hasher.encode_details(np.stack(queries))
    options = {}
    if isinstance(index, PartitionedIndex):
        top = min(args.top_classes or 1, encoded["probabilities"].shape[1])
        options["query_partitions"] = np.argsort(-encoded["probabilities"], axis=1, kind="stable")[:, :top]
    if args.rerank is not None:
        dist, ids = index.search_rerank(encoded["codes"], encoded["features"], args.k, args.rerank, **options)
    else:
        dist, ids = index.search(encoded["codes"], args.k, **options)
    measure = "euclidean" if args.rerank is not None else "hamming"
    found = [int(i) for i in np.unique(ids[ids >= 0])]
    want_images = args.grid is not None
    entries = source_entries(index.source, found, images=want_images)
    by_id = {i: n for n, i in enumerate(found)}
    paths = getattr(index.source, "paths", None)
    results = []
    for name, drow, irow in zip(names, dist, ids):
        query_class = _query_class(name, entries.class_names)
        print(f"query {name}" + (f"  (class {query_class})" if query_class else ""))
        hits = []
        for rank, (d, i) in enumerate(zip(drow, irow), 1):
            if i < 0:
                break
            i = int(i)
            cls = entries.classes[by_id[i]]
            path = paths[i] if paths is not None and i < len(paths) else None
            distance = float(d) if measure == "euclidean" else int(d)
            hit = {"rank": rank, "id": i, "distance": distance, "similarity": round(1.0 / (1.0 + distance), 4),
                   "class": cls, "path": path}
            if query_class is not None and cls is not None:
                hit["same_class"] = cls == query_class
            hits.append(hit)
            mark = {True: "  ok", False: "  --"}.get(hit.get("same_class"), "")
            shown = f"{distance:>7.3f}" if measure == "euclidean" else f"{distance:>3}"
            print(f"  {rank:>3}  id {i:>8}  {measure} distance {shown}  similarity {hit['similarity']:.3f}{mark}"
                  + (f"  [{cls}]" if cls else "") + (f"  {path}" if path else ""))
        results.append({"query": name, "class": query_class, "measure": measure, "results": hits})
    if args.json:
        write_json(args.json, results)
    if want_images:
        from .plots import GridCell, draw_result_grid  # noqa: PLC0415

        rows = []
        for query, name, res in zip(thumbnails, names, results):
            head = GridCell(query, Path(name).name, res["class"], None)
            cells = [GridCell(entries.images[by_id[h["id"]]], f"#{h['rank']} d={h['distance']:.4g}", h["class"] or _short(h["path"]),
                              h.get("same_class")) for h in res["results"]]
            rows.append((head, cells))
        draw_result_grid(args.grid, rows)
        print(f"wrote {args.grid}")
    return 0


def _query_class(name: str, class_names) -> str | None:
    """A query's class, when its parent folder is named like one of the index's classes."""
    from .data.source import class_of_path  # noqa: PLC0415

    cls = class_of_path(Path(name).as_posix())
    return cls if cls in class_names else None


def _short(path: str | None) -> str | None:
    return None if path is None else Path(path).name


# -- entry point ----------------------------------------------------------------------------------

# -- cluster --------------------------------------------------------------------------------------

AUTOENCODERS = ("vae", "sparse-ae", "ae")
FEATURE_ROUTES = ("pixels", "pca", "patches", *AUTOENCODERS)


def _cluster_features(name: str, images, args, saved: dict):
    """``(features (n, dim), seconds)`` of ``images`` by ``name``: pixels, pca, vae, sparse-ae, ae or a saved model
    folder (loaded in ``saved``, by name)."""
    from . import cluster  # noqa: PLC0415
    from .baselines import RoundingNoiseBits  # noqa: PLC0415
    from .hashers import make_hasher  # noqa: PLC0415
    from .images import to_features  # noqa: PLC0415

    t0 = time.perf_counter()
    if name == "pixels":
        features = to_features(images)
    elif name == "pca":
        pixels = to_features(images)
        if args.pca_dims > min(pixels.shape):
            raise ValueError(f"--features pca cannot take {args.pca_dims} principal components of {len(pixels)} images of "
                             f"{pixels.shape[1]} values: use --pca-dims {min(pixels.shape)} or fewer")
        features = cluster.pca(pixels, args.pca_dims, args.seed)
    elif name == "patches":
        features = _patch_features_for_clustering(images, args)
    elif name in AUTOENCODERS:
        from .vae import PRESETS  # noqa: PLC0415

        preset = args.preset or "cpu"
        if preset not in PRESETS:
            raise ValueError(f"unknown --preset {preset!r} for {name}; choose one of {', '.join(PRESETS)}")
        latent = args.latent_dim or PRESETS[preset].latent_dim
        options = {k: v for k, v in {"epochs": args.epochs, "batch_size": args.batch_size,
                                     "architecture": args.architecture}.items() if v is not None}
        hasher = make_hasher(name, n_bits=latent, seed=args.seed, preset=preset, latent_dim=latent, **options)
        with warnings.catch_warnings():  # its codes (ITQ of the latent space) go unused here, and so does their note
            warnings.simplefilter("ignore", RoundingNoiseBits)
            hasher.fit(images)
        if args.save_model:
            hasher.save(Path(args.save_model) / name)
        features = hasher.latents(images)
    elif name in saved:
        hasher = saved[name]
        if not hasattr(hasher, "latents"):
            raise ValueError(f"{name} holds a model of method {hasher.method!r}, which has no latent space: use a vae, "
                             "sparse-ae, ae or patches model (jaxhash fit --method vae)")
        features = hasher.latents(images)
    else:
        raise ValueError(_unknown_feature_message(name))
    return features, time.perf_counter() - t0


def _patch_features_for_clustering(images, args):
    """k-means patch features (Coates, Lee & Ng) of ``images``, standardised and reduced by PCA to --pca-dims."""
    import jax  # noqa: PLC0415

    from . import cluster  # noqa: PLC0415
    from .patches import feature_scaling, learn_patch_dictionary, patch_features  # noqa: PLC0415

    features = patch_features(learn_patch_dictionary(jax.random.key(args.seed), images), images, progress=True)
    mean, scale = feature_scaling(features)
    features = (features - mean) / scale
    return cluster.pca(features, args.pca_dims, args.seed)


def _check_patch_route(images, args) -> None:
    """--features patches against the images, in the command's words, before any work."""
    from .patches import N_CENTRES, PATCH_SIZE, POOL  # noqa: PLC0415

    n, height, width = len(images), images.shape[1], images.shape[2]
    smallest = PATCH_SIZE + POOL - 1  # a patch position per pooling region
    if min(height, width) < smallest:
        raise ValueError(f"--features patches takes {PATCH_SIZE}x{PATCH_SIZE} patches from {POOL}x{POOL} regions, which do "
                         f"not fit in {height}x{width} images: read them at --image-size {max(smallest, 32)}")
    per_image = (height - PATCH_SIZE + 1) * (width - PATCH_SIZE + 1)
    if n * per_image < N_CENTRES:
        raise ValueError(f"--features patches learns {N_CENTRES} kinds of patch, but {n} images of {height}x{width} hold "
                         f"only {n * per_image} patches: use at least {-(-N_CENTRES // per_image)} images")
    most = min(n, N_CENTRES * POOL * POOL)
    if args.pca_dims > most:
        raise ValueError(f"--features patches cannot take {args.pca_dims} principal components of {n} images: use "
                         f"--pca-dims {most} or fewer")


def _models_input_size(features, saved: dict) -> tuple[int, int] | None:
    """The ``(H, W)`` of the ``saved`` models when every one of ``features`` is one and they share it (a photo
    folder of mixed sizes is then read at it, as  jaxhash index --folder  does), else None."""
    if len(saved) < len(features):
        return None
    sizes = {tuple(getattr(model, "input_shape_", None) or ())[:2] for model in saved.values()}
    return next(iter(sizes)) if len(sizes) == 1 and () not in sizes else None


def _unknown_feature_message(name: str) -> str:
    return (f"unknown --features {name!r}: use pixels, pca, patches, {', '.join(AUTOENCODERS)} or a folder saved by "
            "jaxhash fit --method vae (or sparse-ae, ae, patches)")


def _check_cluster_names(args) -> None:
    """Refuse a bad --features or --reduce name before any data is read or model trained."""
    from .cluster import EMBEDDINGS, MAX_FULL_COVARIANCE_DIM  # noqa: PLC0415

    for name in args.features:
        if name not in FEATURE_ROUTES and not Path(name).is_dir():
            raise ValueError(_unknown_feature_message(name))
        if name in FEATURE_ROUTES and Path(name).is_dir():
            warnings.warn(f"--features {name} is the {name} route, not the folder {name} here: write ./{name} for the "
                          "folder", stacklevel=2)
    for reduction in args.reduce:
        if reduction not in ("none", *EMBEDDINGS):
            raise ValueError(f"unknown --reduce {reduction!r}: use none, {', '.join(EMBEDDINGS)} (comma-separated)")
    if args.algorithm == "gmm" and args.dims > MAX_FULL_COVARIANCE_DIM and set(args.reduce) & {"tsne", "umap"}:
        raise ValueError(f"a Gaussian mixture of {args.dims}-dim points needs too much memory: use --dims at most "
                         f"{MAX_FULL_COVARIANCE_DIM} or --algorithm kmeans")


def _check_cluster_points(points, name: str, reduction: str, algorithm: str) -> None:
    """The command line's wording of the limits the library states in its own argument names."""
    from .cluster import MAX_FULL_COVARIANCE_DIM  # noqa: PLC0415

    if algorithm == "gmm" and points.shape[1] > MAX_FULL_COVARIANCE_DIM:
        raise ValueError(f"a Gaussian mixture of {points.shape[1]}-dim points ({name}, "
                         f"{'no reduction' if reduction == 'none' else reduction}) needs too much memory: reduce them first "
                         f"(--reduce pca or umap, --dims at most {MAX_FULL_COVARIANCE_DIM}) or use --algorithm kmeans")


def _check_cluster_dims(dims: int, reduction: str, n: int, n_features: int | None = None, label: str = "") -> None:
    """--dims against what t-SNE or UMAP can make of ``n`` images (of ``n_features`` values, once known)."""
    from .cluster import max_embed_dims  # noqa: PLC0415

    most = max_embed_dims(reduction, n, n_features)
    if dims > most:
        what = f"{reduction} of {n} images" + (f" of {n_features} {label} values" if n_features is not None else "")
        raise ValueError(f"--dims {dims} is too many for {what}: " + (f"use --dims {most} or fewer" if most >= 1 else
                                                                      f"it needs at least {dims + n - most} images"))


def cmd_cluster(args) -> int:
    import jax  # noqa: PLC0415
    import numpy as np  # noqa: PLC0415

    from . import cluster  # noqa: PLC0415
    from .data import dataset_part  # noqa: PLC0415
    from .hashers import load_hasher  # noqa: PLC0415

    _check_cluster_names(args)
    saved = {name: load_hasher(name) for name in args.features if name not in FEATURE_ROUTES}
    dataset = _load_at_model_size(args, _models_input_size(args.features, saved))
    if args.part == "all" and len(dataset.x_test):
        images = np.concatenate([dataset.x_train, dataset.x_test])
        labels = np.concatenate([dataset.y_train, dataset.y_test])
    elif args.part != "all" and not len(dataset.x_test):
        raise ValueError(f"{dataset.name} has no train and test splits (a class/*.jpg folder is one set): use --part all")
    else:
        images, labels, _ = dataset_part(dataset, "train" if args.part in ("all", "train") else "query", "official")
    if args.limit is not None and args.limit < len(images):
        keep = np.random.default_rng(args.seed).choice(len(images), args.limit, replace=False)
        images, labels = images[np.sort(keep)], labels[np.sort(keep)]
    counts = np.unique(labels, return_counts=True)[1]  # images per class
    k = args.k or len(counts)
    if k > len(images):
        raise ValueError(f"--k {k} is more clusters than the {len(images)} images: use --k {len(images)} or fewer")
    if args.algorithm == "balanced" and counts.max() > 1.5 * counts.min():
        warnings.warn(f"--algorithm balanced holds the {k} clusters to equal sizes, but the classes here hold "
                      f"{counts.min()} to {counts.max()} images each: on classes this unequal, kmeans or gmm may do "
                      "better", stacklevel=1)
    if "patches" in args.features:
        _check_patch_route(images, args)
    for reduction in sorted(set(args.reduce) & {"tsne", "umap"}):  # before any training; PCA is capped, with a note
        _check_cluster_dims(args.dims, reduction, len(images))
    records, figure = [], []
    print(f"{args.algorithm} into k = {k} clusters of {len(images)} images of {dataset.name} (accuracy: best one-to-one "
          "matching of clusters to classes; seconds include training and reduction)")
    line = "{:<12} {:<9} {:>8} {:>7} {:>7} {:>8}"
    print(line.format("features", "reduction", "accuracy", "NMI", "ARI", "seconds"), flush=True)
    key = jax.random.key(args.seed)
    for name in args.features:
        features, feature_seconds = _cluster_features(name, images, args, saved)
        label = Path(name).name if name in saved else name
        for reduction in args.reduce:
            t0 = time.perf_counter()
            if reduction == "none":
                points = features
            else:
                if reduction != "pca":
                    _check_cluster_dims(args.dims, reduction, len(features), features.shape[1], label)
                dims = min(args.dims, *features.shape) if reduction == "pca" else args.dims
                if dims < args.dims:
                    warnings.warn(f"--reduce pca of {label}: {features.shape[0]} points of {features.shape[1]} values have "
                                  f"at most {dims} principal components, so {dims} dims, not {args.dims}", stacklevel=1)
                points = cluster.embed(features, reduction, dims, args.seed,
                                       **({"n_neighbors": min(20, len(features) - 1), "min_dist": 0.0}
                                          if reduction == "umap" else {}))
            reduce_seconds = time.perf_counter() - t0
            _check_cluster_points(points, name, reduction, args.algorithm)
            t0 = time.perf_counter()
            if args.algorithm == "gmm":
                assigned = cluster.gaussian_mixture(key, points, k).labels
            elif args.algorithm == "balanced":
                assigned = cluster.balanced_kmeans(key, points, k).labels
            else:
                assigned = cluster.kmeans(key, points, k).labels
            scores = {"accuracy": cluster.clustering_accuracy(labels, assigned),
                      "nmi": cluster.normalized_mutual_info(labels, assigned),
                      "ari": cluster.adjusted_rand_index(labels, assigned)}
            seconds = feature_seconds + reduce_seconds + time.perf_counter() - t0
            print(line.format(label, reduction if reduction != "none" else "-", f"{scores['accuracy']:.4f}",
                              f"{scores['nmi']:.4f}", f"{scores['ari']:.4f}", f"{seconds:.1f}"), flush=True)
            records.append({"data": dataset.name, "images": len(images), "k": k, "features": label, "reduction": reduction,
                            "dims": None if reduction == "none" else int(points.shape[1]), "algorithm": args.algorithm,
                            **scores, "seconds": round(seconds, 2)})
            if args.json:  # after every row: a later failure (or Ctrl-C) keeps the rows already measured
                write_json(args.json, records)
            if args.plot and points.shape[1] < 2:
                warnings.warn(f"--plot leaves out {label}, {reduction if reduction != 'none' else 'no reduction'}: its points "
                              "have one dimension", stacklevel=1)
            elif args.plot:
                figure.append((f"{label}, {reduction if reduction != 'none' else 'no reduction'} (acc {scores['accuracy']:.3f})",
                               points[:, :2], labels))
    if args.plot:
        from .plots import draw_scatter_panels  # noqa: PLC0415

        if figure:
            print(f"scatter plots (first two dimensions, coloured by true class): {draw_scatter_panels(args.plot, figure, dataset.class_names)}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="jaxhash", description="Binary hashing and image retrieval in JAX.", epilog=EPILOG)
    sub = parser.add_subparsers(dest="command", required=True)

    preset_help = ("size/schedule preset of a neural method (dbn-ae: tiny, cpu-small, paper; cnn-hash, cnn-softmax: tiny, "
                   "cpu, gpu; vae, sparse-ae, ae, ae-umap: tiny, cpu, gpu, n2d (ae-umap's default))")
    p = sub.add_parser("benchmark", help="methods x bits table of retrieval metrics on a data set", epilog=EPILOG,
                       description="Fit each method at each code length on a protocol's database, encode queries and "
                                   "database, and print one table per metric.")
    _add_data_args(p)
    p.add_argument("--methods", default="lsh,pcah,itq,sh,sph", metavar="M1,M2",
                   help="comma-separated hashing methods: lsh, pcah, itq, sh, sph, kmh, dbn-ae, cnn-hash, cnn-hash-frozen, "
                        "cnn-softmax, vae, sparse-ae, ae, ae-umap, patches (default: %(default)s)")
    p.add_argument("--bits", type=_bits, default=[16, 32, 64], metavar="B1,B2", help="comma-separated code lengths (default: 16,32,64)")
    p.add_argument("--metric", default="map@all", metavar="M1,M2",
                   help="comma-separated: map@all, map@R (mAP of the top R), p@K (precision of the top K), "
                        "pr@RADIUS (precision within a Hamming radius) (default: %(default)s)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write one record per (method, bits, metric) cell here")
    p.add_argument("--preset", default=None, help=preset_help)
    p.add_argument("--epochs", type=_positive, default=None,
                   help="neural methods in --methods: override the preset's epochs (the classic methods ignore it)")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("fit", help="train a hasher on a data set or image folder and save it", epilog=EPILOG,
                       description="Train a hasher and save it as a folder. Without --protocol it trains on the data set's "
                                   "training images: every image of a class/*.jpg folder, the train split of a "
                                   "train|test/class/*.jpg folder or a named data set.")
    _add_data_args(p, protocol_default=None,
                   protocol_help="train on the database part of this retrieval protocol instead (1k, official or a query count)")
    p.add_argument("--method", default="itq", help="hashing method: lsh, pcah, itq, sh, sph, kmh, dbn-ae, cnn-hash, "
                   "cnn-hash-frozen, cnn-softmax, vae, sparse-ae, ae, ae-umap, patches (default: %(default)s)")
    p.add_argument("--bits", type=_positive, default=64, help="code length in bits (default: %(default)s)")
    p.add_argument("--out", required=True, metavar="FOLDER", help="folder to save the hasher in (replaced if it exists)")
    p.add_argument("--preset", default=None, help=preset_help)
    p.add_argument("--checkpoint-dir", default=None, metavar="DIR", help="neural methods: save a checkpoint after every epoch here")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --checkpoint-dir")
    p.add_argument("--data-parallel", action="store_true",
                   help="neural methods: split every training batch over all devices (GPUs, TPU cores; all hosts after "
                        "jax.distributed.initialize), parameters replicated; the batch size must be a multiple of the "
                        "device count")
    p.add_argument("--mode", default=None, choices=("joint", "frozen"),
                   help="cnn-hash: train the CNN and the hash layer together (joint, the default) or the hash layer on a "
                        "trained, fixed CNN (frozen)")
    p.add_argument("--architecture", default=None, choices=("conv", "dense"),
                   help="vae, sparse-ae, ae, ae-umap: convolutional or fully connected (default: the preset's)")
    p.add_argument("--epochs", type=_positive, default=None, help="neural methods: override the preset's epochs")
    p.add_argument("--batch-size", type=_positive, default=None, help="neural methods: override the preset's batch size")
    p.add_argument("--learning-rate", type=float, default=None, help="neural methods: override the preset's peak learning rate")
    p.add_argument("--weights", default=None, metavar="FILE",
                   help="cnn-hash, cnn-softmax: start from these network weights (.npz written by hasher.save_weights)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("index", help="encode an image folder or a data set into an index file", epilog=EPILOG,
                       description="Encode images with a saved hasher into an index file (.jhx) that records where the "
                                   "images are and which model made the codes.")
    p.add_argument("--model", required=True, metavar="FOLDER", help="folder of a hasher saved by  jaxhash fit  (or hasher.save)")
    p.add_argument("--folder", default=None, metavar="PATH",
                   help="a folder (or .tar.gz) of images to index; images are resized to the model's input size")
    _add_data_args(p, required=False, protocol_default=None,
                   protocol_help="with --data: index the database part of this retrieval protocol (default: the data set's "
                                 "training images)")
    p.add_argument("--out", required=True, metavar="FILE", help="index file to write (.jhx; replaced atomically)")
    p.add_argument("--type", choices=("flat", "partitioned", "mih"), default=None,
                   help="flat (default): an exact scan; partitioned: every image filed under the class the model "
                        "predicts (cnn-softmax, cnn-hash), a search scans only the query's top classes; mih: multi-index "
                        "hashing (Norouzi, Punjani & Fleet), exact and sublinear on large collections")
    p.add_argument("--partitioned", action="store_true", help="the same as --type partitioned")
    p.add_argument("--substrings", type=_positive, default=None, metavar="M",
                   help="--type mih: cut the codes into M substrings, one table each (default about bits / log2(images))")
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("search", help="query images -> ranked ids, classes, paths and distances",
                       description="Search an index with query images encoded by the model that built it.")
    p.add_argument("queries", nargs="+", metavar="IMAGE", help="query image files (any size; resized to the model's input)")
    p.add_argument("--model", required=True, metavar="FOLDER", help="the saved hasher the index was built with")
    p.add_argument("--index", required=True, metavar="FILE", help="index file written by  jaxhash index")
    p.add_argument("--k", type=_positive, default=10, help="number of results per query (default: %(default)s)")
    p.add_argument("--grid", default=None, metavar="PNG",
                   help="draw each query beside its results, labelled with rank, distance and class (green: same class "
                        "as the query, red: another class)")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the results as JSON")
    p.add_argument("--rerank", type=_positive, default=None, metavar="N",
                   help="two-stage search: take the N nearest codes (at least --k), then order them by the Euclidean "
                        "distance of the model's features (indexes built with cnn-hash, cnn-softmax, vae, sparse-ae, ae or patches)")
    p.add_argument("--top-classes", type=_positive, default=None, metavar="C",
                   help="partitioned index: search the partitions of the query's C most probable classes (default 1)")
    p.add_argument("--shard", action="store_true",
                   help="flat index: split the codes over every device (e.g. all GPUs of the machine), search each part "
                        "there and merge the lists exactly")
    p.set_defaults(func=cmd_search)
    p = sub.add_parser("cluster", help="cluster images without labels and score the clusters against the classes",
                       epilog=EPILOG,
                       description="Kovalenko's route: features (pixels, PCA, a variational or sparse autoencoder's latent "
                                   "space), optionally reduced by PCA, t-SNE or UMAP, clustered by k-means, balanced k-means or a "
                                   "Gaussian mixture; prints clustering accuracy, NMI and ARI against the true classes.")
    _add_data_args(p, protocol=False)
    p.add_argument("--part", default="all", choices=("all", "train", "test"),
                   help="which images: both splits (default), the training split or the test split")
    p.add_argument("--limit", type=_positive, default=None, metavar="N", help="a random subset of N images")
    p.add_argument("--features", type=_csv, default=["vae"], metavar="F1,F2",
                   help="comma-separated: pixels, pca, patches (k-means patch features, Coates, Lee & Ng; no "
                        "training, then PCA to --pca-dims), vae, sparse-ae, ae (a plain autoencoder; with --preset n2d, "
                        "N2D's), or a model folder saved by jaxhash fit --method vae, sparse-ae, ae or patches (a "
                        "folder named like a route: write ./patches) (default: vae)")
    p.add_argument("--reduce", type=_csv, default=["none"], metavar="R1,R2",
                   help="comma-separated reductions before clustering: none, pca, tsne (scikit-learn), umap (umap-learn) "
                        "(default: none)")
    p.add_argument("--dims", type=_positive, default=10, help="dimensions after --reduce (default: %(default)s; t-SNE: at most 3 is fast)")
    p.add_argument("--pca-dims", type=_positive, default=50, help="dimensions of --features pca and patches (default: %(default)s)")
    p.add_argument("--algorithm", default="kmeans", choices=("kmeans", "gmm", "balanced"),
                   help="clustering: kmeans, gmm (a Gaussian mixture), or balanced (k-means held to clusters of equal "
                        "size by Sinkhorn assignment, for classes about equally common) (default: %(default)s)")
    p.add_argument("--k", type=_positive, default=None, help="number of clusters (default: the number of classes)")
    p.add_argument("--preset", default=None,
                   help="autoencoders: tiny, cpu, gpu, or n2d (N2D's fully connected d-500-500-2000-10, the best with "
                        "--features ae --reduce umap --algorithm gmm) (default: cpu)")
    p.add_argument("--architecture", default=None, choices=("conv", "dense"), help="autoencoders: override the preset's")
    p.add_argument("--epochs", type=_positive, default=None, help="autoencoders: override the preset's epochs")
    p.add_argument("--batch-size", type=_positive, default=None, help="autoencoders: override the preset's batch size")
    p.add_argument("--latent-dim", type=_positive, default=None, help="autoencoders: latent size (default: the preset's)")
    p.add_argument("--save-model", default=None, metavar="DIR", help="save the trained autoencoders under DIR/vae, DIR/sparse-ae, DIR/ae")
    p.add_argument("--plot", default=None, metavar="FILE.png", help="draw every reduction's first two dimensions, by true class")
    p.add_argument("--json", default=None, metavar="FILE",
                   help="also write one record per row here (rewritten after every row: a later failure keeps the rows measured)")
    p.set_defaults(func=cmd_cluster)

    p = sub.add_parser("serve", help="the image search web system: search by example, index folders, train on your classes",
                       epilog=EPILOG,
                       description="Start the web page and JSON API (Hu & Feng's deep-learning image retrieval system): "
                                   "search by example, index server folders or uploaded zips, train a CNN on a folder with "
                                   "one sub-folder per class with live progress, and maintain models and indexes. All "
                                   "state lives in --data-dir. Needs  pip install 'jaxhash[serve]'.")
    p.add_argument("--data-dir", required=True, metavar="DIR", help="folder for the database, models, indexes and images")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default: %(default)s; any other needs --token)")
    p.add_argument("--port", type=_port, default=8000, help="port, 1 to 65535 (default: %(default)s)")
    p.add_argument("--allow-root", action="append", default=[], metavar="FOLDER",
                   help="a server folder that index and training jobs may read, with everything below it (repeatable)")
    p.add_argument("--token", default=None, help="a secret every change (train, index, delete) must carry; required off loopback")
    p.add_argument("--database-url", default=None, metavar="URL",
                   help="a SQLAlchemy URL, e.g. postgresql+psycopg://user@host/db (default: SQLite in --data-dir)")
    p.add_argument("--min-images-per-class", type=_min_per_class, default=None,
                   help="the least images of every class a training folder must have, at least 2 (default: 100, as Hu & "
                        "Feng ask)")
    p.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"),
                   help="how much the web server logs (default: %(default)s)")
    p.set_defaults(func=cmd_serve)
    return parser


def _port(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = 0
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"expected a port number from 1 to 65535, got {text!r}")
    return port


def _min_per_class(text: str) -> int:
    value = _positive(text)
    if value < 2:
        raise argparse.ArgumentTypeError("expected at least 2: one image of each class is held out for validation")
    return value


def cmd_serve(args) -> int:
    from .serve import serve  # noqa: PLC0415

    serve(args.data_dir, args.host, args.port, args.allow_root, args.token, args.database_url, args.min_images_per_class,
          args.log_level)
    return 0


def use_compilation_cache() -> Path | None:
    """Turn on XLA's persistent compilation cache, so that a command's compiled searches and models
    load from disk the next time. (A search of up to ``HOST_SEARCH_MAX_QUERIES`` images with a
    pixel hasher compiles nothing: it scans the codes with NumPy and never loads JAX.)

    The folder is ``$JAXHASH_CACHE_DIR``, else ``$XDG_CACHE_HOME/jaxhash/xla`` (``~/.cache/...``);
    ``JAXHASH_CACHE_DIR=off`` turns it off, and a ``JAX_COMPILATION_CACHE_DIR`` set by the user
    wins. A damaged entry is never fatal: ``main`` removes an entry that no longer decompresses, with a
    one-line note, and the program is compiled and written again (silently where warnings are
    ignored; one that decompresses but does not load is left, and the note says to delete the folder). Returns the
    folder, or None when off or not writable.
    """
    chosen = os.environ.get("JAXHASH_CACHE_DIR")
    if chosen is not None and chosen.strip().lower() in ("", "0", "off", "no", "none"):
        return None
    folder = Path(chosen) if chosen else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "jaxhash" / "xla"
    folder = Path(os.environ.get("JAX_COMPILATION_CACHE_DIR") or folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError:
        return None  # a read-only home: run without the cache
    settings = {"jax_compilation_cache_dir": str(folder), "jax_persistent_cache_min_compile_time_secs": "0"}
    for name, value in settings.items():
        os.environ.setdefault(name.upper(), value)
    if "jax" in sys.modules:  # already imported (jaxhash.cli.main called from Python): set it directly
        import jax  # noqa: PLC0415

        jax.config.update("jax_compilation_cache_dir", os.environ["JAX_COMPILATION_CACHE_DIR"])
        jax.config.update("jax_persistent_cache_min_compile_time_secs",
                          float(os.environ["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"]))
    return folder


_DAMAGED_CACHE_ENTRY = re.compile(r"Error reading persistent compilation cache entry for '([\w.-]+)'")


def _remove_damaged_cache_entries(cache: Path, message: str, repaired: set | None = None) -> str | None:
    """After JAX's warning that a cache entry could not be read, remove that program's entries that no longer
    decompress (JAX never overwrites an entry, so a damaged one would warn and recompile on every run) and
    return a one-line note; None for other warnings, and for a program already in ``repaired`` (the names
    repaired so far in this run, updated here). Never raises: the cache is an optimisation."""
    match = _DAMAGED_CACHE_ENTRY.match(message)
    if match is None:
        return None
    name = match[1]  # a program's name, or (JAX's other warning) one entry's whole key
    if repaired is not None and name in repaired:
        return None
    removed = 0
    try:
        from jax._src.compilation_cache import compress_executable, decompress_executable  # noqa: PLC0415

        if decompress_executable(compress_executable(b"probe")) != b"probe":
            raise ImportError("JAX's cache format is not the one this jaxhash knows")
        entries = [*cache.glob(f"{glob.escape(name)}-cache"), *cache.glob(f"{glob.escape(name)}-*-cache")]
        for entry in entries:
            try:
                decompress_executable(entry.read_bytes())
            except Exception:  # noqa: BLE001 - zlib's and zstd's errors alike mean damage
                entry.unlink(missing_ok=True)
                removed += 1
                entry.with_name(entry.name[: -len("-cache")] + "-atime").unlink(missing_ok=True)
    except Exception:  # noqa: BLE001 - a read-only folder, another JAX: the note below says how to clear it
        pass
    if removed:
        if repaired is not None:
            repaired.add(name)
        return (f"the compilation cache {cache} held {removed} damaged entr{'y' if removed == 1 else 'ies'} for "
                f"{name!r}: removed, compiled again (to turn the cache off: JAXHASH_CACHE_DIR=off)")
    return (f"the compilation cache {cache} holds an entry for {name!r} that JAX cannot load: compiled again, on every "
            f"run until that folder is deleted (or the cache turned off: JAXHASH_CACHE_DIR=off)")


def _ignored(category, message: str, module: str) -> bool:
    """Whether Python's warning filters (``-W``, ``PYTHONWARNINGS``) ignore this warning from ``module``,
    asked of :mod:`warnings` itself (a filter that turns it into an error does not ignore it)."""
    with warnings.catch_warnings(record=True) as shown:
        try:
            warnings.warn_explicit(message, category, module.replace(".", "/") + ".py", 0, module=module, registry={})
        except category:
            return False
    return not shown


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    cache = use_compilation_cache()
    # jaxhash's notes (skipped files, converted images) as one line each, without a source line.
    formatwarning, showwarning = warnings.formatwarning, warnings.showwarning
    package = str(Path(__file__).resolve().parent)

    def one_line(message, category, filename, lineno, line=None):
        if str(Path(filename).resolve()).startswith(package):
            return f"jaxhash {args.command}: note: {message}\n"
        return formatwarning(message, category, filename, lineno, line)

    repaired: set[str] = set()
    # Repaired even where warnings are ignored (PYTHONWARNINGS=ignore), then silently: else every run recompiles.
    quiet_repair = _ignored(UserWarning, "Error reading persistent compilation cache entry for 'jit_f': "
                                         "ValueError: damaged", "jax._src.compiler")

    def repair_cache(message, category, filename, lineno, file=None, line=None):
        if cache is not None and _DAMAGED_CACHE_ENTRY.match(str(message)):
            note = _remove_damaged_cache_entries(cache, str(message), repaired)
            if note is None or quiet_repair:
                return None  # told earlier in this run, or warnings are ignored: repaired without a word
            message, filename = note, __file__
        return showwarning(message, category, filename, lineno, file, line)

    warnings.formatwarning, warnings.showwarning = one_line, repair_cache
    try:
        with warnings.catch_warnings():
            if cache is not None:
                warnings.filterwarnings("default", message=_DAMAGED_CACHE_ENTRY.pattern, category=UserWarning)
            if getattr(args, "json", None):
                check_output_file(args.json)  # one line, before any work
            return args.func(args)
    except USER_ERRORS as err:
        if os.environ.get("JAXHASH_DEBUG"):
            raise
        print(f"jaxhash {args.command}: error: {_error_message(err)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        saved = getattr(args, "checkpoint_dir", None)
        saved = saved if saved and Path(saved).is_dir() and any(Path(saved).iterdir()) else None  # an epoch was saved
        if saved:
            hint = f"; the epochs done are saved in {saved}: the same command with --resume continues from the last"
        elif args.command == "fit" and getattr(args, "checkpoint_dir", None) is None and _takes_checkpoints(args.method):
            hint = "; nothing was kept: with --checkpoint-dir DIR every epoch is saved, and --resume continues from the last"
        else:
            hint = ""
        print(f"jaxhash {args.command}: interrupted{hint}", file=sys.stderr)
        return 130
    finally:
        warnings.formatwarning, warnings.showwarning = formatwarning, showwarning


if __name__ == "__main__":
    sys.exit(main())
