#!/usr/bin/env python
"""Supervised deep hashing on CIFAR-10, trained from scratch: the figures of the supervised-hashing work.

Zelensky, Pismenskova & Voronin's CNN + autoencoder hash layer (``cnn-hash``, joint and frozen)
and Hu & Feng's softmax feature with an index partitioned by predicted class (``cnn-softmax``),
beside the classic hashers, on the official split (10,000 test queries, 50,000 training images
as the database). Writes, as JSON and PNG:

* the comparison table: top-5 precision (%) and mAP@all at 32/48/64/128 bits for every method
  (one ``jaxhash benchmark`` run, in this process so the CNN classifier is trained once for
  cnn-softmax and frozen cnn-hash);
* the training curve of cnn-hash (loss, training and validation accuracy per epoch);
* queries with their nearest images;
* two-stage search: mAP@all and P@10 of Hamming ranking vs Hamming short-list (100, 1,000)
  re-ranked by Euclidean distance on the CNN descriptor, and the time per query of each;
* the partitioned index: P@1, P@5, P@10 with cnn-softmax, and search time flat vs partitioned.

    python scripts/supervised_hashing.py --data-dir ../shared/data --preset cpu --out results/supervised_hashing
    python scripts/supervised_hashing.py --preset gpu ...        # one accelerator (the full recipe)

CIFAR-100 (the paper's own data) needs the internet: ``--data tfds:cifar100``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from jaxhash.cli import _output_file, _seed, run_script, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="cifar10", help="data set (default: %(default)s)")
    parser.add_argument("--data-dir", default=None, help="folder holding the data sets")
    parser.add_argument("--protocol", default="official", help="retrieval protocol (default: %(default)s)")
    parser.add_argument("--preset", default="cpu", help="tiny, cpu or gpu (default: %(default)s)")
    parser.add_argument("--bits", default="32,48,64,128", help="code lengths of the table (default: %(default)s)")
    parser.add_argument("--methods", default="cnn-hash,cnn-hash-frozen,cnn-softmax,itq,lsh,sh,sph,pcah,kmh",
                        help="methods of the table (default: %(default)s)")
    parser.add_argument("--figure-bits", type=int, default=64, help="code length of the other figures (default: %(default)s)")
    parser.add_argument("--limit", type=int, default=None, help="use only the first N queries and N*5 database images (smoke runs)")
    parser.add_argument("--skip-table", action="store_true", help="only the figures, not the comparison table")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--out", default="results/supervised_hashing", help="folder for the PNG figures")
    parser.add_argument("--json", default=None, type=_output_file, help="write every figure's numbers here")
    args = parser.parse_args()

    import jax

    import jaxhash
    from jaxhash.cli import main as jaxhash_main
    from jaxhash.data import load_dataset, retrieval_split

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    warnings.simplefilter("ignore", UserWarning)  # resize notes
    dataset = load_dataset(args.data, data_dir=args.data_dir)
    split = retrieval_split(dataset, args.protocol, seed=args.seed)
    qx, qy, dx, dy = split.query_x, split.query_y, split.db_x, split.db_y
    if args.limit:
        rng = np.random.default_rng(args.seed)
        q_pick, d_pick = rng.permutation(len(qx))[: args.limit], rng.permutation(len(dx))[: 5 * args.limit]
        qx, qy, dx, dy = qx[q_pick], qy[q_pick], dx[d_pick], dy[d_pick]
    print(f"{dataset.name}, protocol {args.protocol}: {len(qx)} queries, {len(dx)} database/training images; preset "
          f"{args.preset}; jax {jax.__version__} on {jax.default_backend()}", flush=True)
    record = {"data": dataset.name, "protocol": args.protocol, "preset": args.preset, "backend": jax.default_backend(),
              "queries": len(qx), "database": len(dx)}

    if not args.skip_table:
        table_json = out / "table.json"
        argv = ["benchmark", "--data", args.data, "--protocol", args.protocol, "--methods", args.methods, "--bits", args.bits,
                "--metric", "p@5,map@all", "--preset", args.preset, "--json", str(table_json), "--seed", str(args.seed)]
        if args.data_dir:
            argv += ["--data-dir", args.data_dir]
        if args.limit:
            print("(--limit: the table uses the whole data set; skip it with --skip-table for a smoke run)")
        t0 = time.perf_counter()
        if jaxhash_main(argv) != 0:
            sys.exit("the benchmark failed")
        record["table"] = json.loads(table_json.read_text())
        record["table_seconds"] = round(time.perf_counter() - t0, 1)

    bits = args.figure_bits
    hasher = jaxhash.CNNHasher(n_bits=bits, preset=args.preset, seed=args.seed)
    t0 = time.perf_counter()
    hasher.fit(dx, dy)
    record["cnn_hash"] = {"bits": bits, "train_seconds": round(time.perf_counter() - t0, 1),
                          "validation_accuracy": hasher.validation_accuracy_, "history": hasher.history_,
                          "test_accuracy": float(np.mean(hasher.predict(qx) == qy))}
    print(f"cnn-hash {bits} bits: trained in {record['cnn_hash']['train_seconds']}s, test accuracy "
          f"{record['cnn_hash']['test_accuracy']:.4f}", flush=True)
    draw_curve(out / "training_curve.png", hasher.history_)
    db = hasher.encode_details(dx)
    qd = hasher.encode_details(qx)
    record["two_stage"] = two_stage(db, qd, dy, qy, bits)
    draw_neighbours(out / "neighbours.png", qx, qy, dx, dy, qd["codes"], db["codes"], dataset.class_names, bits)

    softmax = jaxhash.CNNSoftmaxHasher(n_bits=bits, preset=args.preset, seed=args.seed).fit(dx, dy)
    record["partitioned"] = partitioned(softmax, qx, qy, dx, dy)
    if args.json:
        write_json(args.json, record)
        print(f"wrote {args.json}")
    print(f"wrote {out}/training_curve.png, neighbours.png")


def ranking_metrics(order_fn, qy, dy, block: int = 256):
    """mAP over the whole ranking and P@10, the ranking of each query block given by ``order_fn``."""
    ap_sum, p10_sum = 0.0, 0.0
    for start in range(0, len(qy), block):
        order = order_fn(start, min(start + block, len(qy)))
        rel = dy[order] == qy[start : start + len(order), None]
        hits = np.cumsum(rel, axis=1)
        ranks = np.arange(1, rel.shape[1] + 1)
        n_rel = np.maximum(hits[:, -1], 1)
        ap_sum += float(np.sum(np.sum(np.where(rel, hits / ranks, 0.0), axis=1) / n_rel))
        p10_sum += float(np.sum(rel[:, :10].mean(axis=1)))
    return ap_sum / len(qy), p10_sum / len(qy)


def two_stage(db, qd, dy, qy, bits):
    """Hamming ranking vs the Hamming short-list re-ranked by Euclidean distance of the descriptors."""
    import jax.numpy as jnp

    import jaxhash

    db_codes = jnp.asarray(db["codes"])

    def hamming_order(a, b):
        d = np.asarray(jaxhash.pairwise_hamming(jnp.asarray(qd["codes"][a:b]), db_codes))
        return np.argsort(d, axis=1, kind="stable")

    def reranked_order(n):
        def order(a, b):
            full = hamming_order(a, b)
            short = full[:, :n]
            e = np.linalg.norm(db["features"][short] - qd["features"][a:b, None, :], axis=-1)
            head = np.take_along_axis(short, np.argsort(e, axis=1, kind="stable"), axis=1)
            return np.concatenate([head, full[:, n:]], axis=1)

        return order

    result = {}
    index = jaxhash.HashIndex(bits, feature_dim=db["features"].shape[1])
    index.add(db["codes"], features=db["features"])
    index.search(qd["codes"], 10)  # the same call once untimed: compilation and layout stay out of the timing
    t0 = time.perf_counter()
    index.search(qd["codes"], 10)
    hamming_ms = 1000 * (time.perf_counter() - t0) / len(qy)
    m, p10 = ranking_metrics(hamming_order, qy, dy)
    result["hamming"] = {"map_all": m, "p10": p10, "ms_per_query": hamming_ms}
    print(f"two-stage: Hamming only mAP@all {m:.4f}, P@10 {p10:.4f}, {hamming_ms:.3f} ms/query", flush=True)
    for n in (100, 1000):
        index.search_rerank(qd["codes"], qd["features"], 10, n)  # untimed first call
        t0 = time.perf_counter()
        index.search_rerank(qd["codes"], qd["features"], 10, n)
        ms = 1000 * (time.perf_counter() - t0) / len(qy)
        m, p10 = ranking_metrics(reranked_order(n), qy, dy)
        result[f"rerank_{n}"] = {"map_all": m, "p10": p10, "ms_per_query": ms}
        print(f"two-stage: short-list {n} re-ranked: mAP@all {m:.4f}, P@10 {p10:.4f}, {ms:.3f} ms/query", flush=True)
    return result


def partitioned(softmax, qx, qy, dx, dy):
    """P@1/5/10 of cnn-softmax codes in an index partitioned by predicted class, and search times."""
    import jaxhash
    from jaxhash.index import PartitionedIndex

    db = softmax.encode_details(dx)
    qd = softmax.encode_details(qx)
    bits = softmax.n_bits
    flat = jaxhash.HashIndex(bits)
    flat.add(db["codes"])
    part = PartitionedIndex(bits)
    part.add(db["codes"], partitions=np.argmax(db["probabilities"], axis=1))
    top1 = np.argmax(qd["probabilities"], axis=1)
    flat.search(qd["codes"], 10)  # untimed first calls: compilation and per-partition layout
    part.search(qd["codes"], 10, top1)
    result = {"test_accuracy": float(np.mean(softmax.classes_[top1] == qy))}
    for name, run in (("flat", lambda: flat.search(qd["codes"], 10)), ("partitioned", lambda: part.search(qd["codes"], 10, top1))):
        t0 = time.perf_counter()
        _, ids = run()
        seconds = time.perf_counter() - t0
        rel = (ids >= 0) & (dy[np.maximum(ids, 0)] == qy[:, None])  # -1: a partition with fewer than 10 images
        result[name] = {"p1": float(rel[:, :1].mean()), "p5": float(rel[:, :5].mean()), "p10": float(rel[:, :10].mean()),
                        "ms_per_query": 1000 * seconds / len(qy)}
        print(f"cnn-softmax {name}: P@1 {result[name]['p1']:.4f}, P@5 {result[name]['p5']:.4f}, P@10 {result[name]['p10']:.4f}, "
              f"{result[name]['ms_per_query']:.4f} ms/query", flush=True)
    return result


def draw_curve(path, history):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in history if "accuracy" in r]
    epochs = range(1, len(rows) + 1)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(epochs, [r["loss"] for r in rows], "o-", label="loss")
    ax2 = ax.twinx()
    ax2.plot(epochs, [r["accuracy"] for r in rows], "s--", color="tab:green", label="training accuracy")
    if "val_accuracy" in rows[0]:
        ax2.plot(epochs, [r["val_accuracy"] for r in rows], "^-", color="tab:red", label="validation accuracy")
    ax.set_xlabel("epoch")
    ax.set_ylabel("loss")
    ax2.set_ylabel("accuracy")
    fig.legend(loc="upper center", fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_neighbours(path, qx, qy, dx, dy, q_codes, d_codes, class_names, bits, rows: int = 5, k: int = 8):
    from jaxhash import HashIndex
    from jaxhash.plots import GridCell, draw_result_grid

    index = HashIndex(bits)
    index.add(d_codes)
    picks = np.linspace(0, len(qx) - 1, rows).astype(int)
    dist, ids = index.search(q_codes[picks], k)
    grid = []
    for p, drow, irow in zip(picks, dist, ids):
        head = GridCell(qx[p], "query", class_names[qy[p]])
        cells = [GridCell(dx[i], f"#{r + 1} d={d} s={1 / (1 + d):.2f}", class_names[dy[i]], bool(dy[i] == qy[p]))
                 for r, (d, i) in enumerate(zip(drow, irow))]
        grid.append((head, cells))
    draw_result_grid(path, grid)


if __name__ == "__main__":
    run_script(main)
