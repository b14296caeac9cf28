#!/usr/bin/env python
"""Exact Hamming k-NN: jaxhash HashIndex.search vs faiss.IndexBinaryFlat, side by side in one run.

Same random codes and queries for both; runs interleaved (jaxhash, faiss, jaxhash, ...), the
median of each is compared. Both get warmed up first (jaxhash compiles and lays out the database
on its first search; that one-off cost is printed separately). Prints one line per code length
with the ratio FAISS time / jaxhash time (> 1: jaxhash is faster).

    python scripts/bench_search.py                      # 1M codes, 1,000 queries, k=100, 64/128/256 bits
    python scripts/bench_search.py --n 100000 --json bench.json
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
from jaxhash.cli import _output_file, _positive, _positive_list, _seed, run_script, write_json


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=_positive, default=1_000_000, help="database codes")
    parser.add_argument("--queries", type=_positive, default=1000)
    parser.add_argument("--k", type=_positive, default=100)
    parser.add_argument("--bits", type=_positive_list, default=[64, 128, 256], help="comma-separated multiples of 32")
    parser.add_argument("--repeats", type=_positive, default=5, help="timed runs of each, interleaved")
    parser.add_argument("--threads", type=_positive, default=2, help="faiss.omp_set_num_threads")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--json", default=None, type=_output_file, help="write the records here too")
    args = parser.parse_args()
    if any(bits % 32 for bits in args.bits):
        parser.error(f"--bits takes multiples of 32 (random codes of whole words), got {args.bits}")
    if args.k > args.n:  # FAISS pads the rows beyond n with -1, jaxhash returns n: compare n
        print(f"k = {args.k} is more than the {args.n:,} codes: k = {args.n} compared")
        args.k = args.n

    try:
        import faiss
    except ImportError:
        raise SystemExit("this benchmark compares against FAISS: pip install 'jaxhash[faiss]'") from None
    import jax

    from jaxhash import HashIndex
    from jaxhash.search import default_layout

    faiss.omp_set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    print(f"jax {jax.__version__} on {jax.default_backend()} ({os.cpu_count()} cpus), faiss {faiss.__version__} "
          f"with {args.threads} threads; n={args.n:,}, queries={args.queries:,}, k={args.k}, repeats={args.repeats}; "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS') or '(none: the best instruction set of this processor)'}")
    records = []
    for bits in args.bits:
        words = -(-bits // 32)
        db = rng.integers(0, 2**32, size=(args.n, words), dtype=np.uint64).astype(np.uint32)
        queries = rng.integers(0, 2**32, size=(args.queries, words), dtype=np.uint64).astype(np.uint32)
        index = HashIndex(bits)
        index.add(db)
        t0 = time.perf_counter()
        dj, ij = index.search(queries, args.k)  # compile + database layout, once
        first = time.perf_counter() - t0
        fidx = faiss.IndexBinaryFlat(bits)
        fidx.add(db.view(np.uint8))
        qbytes = np.ascontiguousarray(queries.view(np.uint8))
        df, i_f = fidx.search(qbytes, args.k)
        same_distances = bool(np.array_equal(dj, df))
        same_ids = bool(np.array_equal(ij, i_f))
        t_jax, t_faiss = [], []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            index.search(queries, args.k)
            t_jax.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            fidx.search(qbytes, args.k)
            t_faiss.append(time.perf_counter() - t0)
        mj, mf = statistics.median(t_jax), statistics.median(t_faiss)
        record = {
            "bits": bits, "n": args.n, "queries": args.queries, "k": args.k,
            "jaxhash_seconds": round(mj, 4), "faiss_seconds": round(mf, 4), "ratio_faiss_over_jaxhash": round(mf / mj, 3),
            "jaxhash_first_call_seconds": round(first, 3), "same_distances_as_faiss": same_distances,
            "same_ids_as_faiss": same_ids, "faiss_threads": args.threads, "machine": platform.processor() or platform.machine(),
            "layout": default_layout(bits), "xla_flags": os.environ.get("XLA_FLAGS", ""),
        }
        records.append(record)
        print(f"{bits:>4} bits: jaxhash {mj * 1e3:8.1f} ms  faiss {mf * 1e3:8.1f} ms  ratio faiss/jaxhash {mf / mj:5.2f}"
              f"  ({record['layout']}; first call {first:.2f}s; distances equal: {same_distances}, ids equal: {same_ids})",
              flush=True)
    if args.json:
        write_json(args.json, records)


if __name__ == "__main__":
    run_script(main)
