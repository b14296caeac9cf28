#!/usr/bin/env python
"""Search at scale, side by side in one run: the linear scan vs FAISS under two instruction sets,
multi-index hashing vs the linear scan, sharded vs one-device search, cold and warm `jaxhash search`,
PCA-based fitting on wide photos, and exact search on an accelerator beside the card's limits.

    python scripts/bench_scale.py --data-dir ../shared/data --json results/bench_scale.json
    python scripts/bench_scale.py --n 1000000 --parts mih,sharded      # a quicker run

Parts (``--parts``):
  faiss    scripts/bench_search.py (1M random codes, 1,000 queries, k = 100, 64/128/256 bits, FAISS's
           IndexBinaryFlat beside HashIndex) twice, in child processes: with this processor's best
           instruction set and with XLA held to AVX2 (XLA_FLAGS=--xla_cpu_max_isa=AVX2; FAISS picks its own
           kernels either way); ``--faiss-n`` codes (not ``--n``). Needs FAISS (pip install 'jaxhash[faiss]').
  mih      MultiIndexHashIndex (Norouzi, Punjani & Fleet) vs HashIndex on 64-bit codes, k = 1, 10, 100:
           random codes, and "real" codes: ITQ codes of MNIST (``--data-dir``; else the 8x8 digits)
           replicated up to n, 64% of them with one random bit flipped, queried by test images'
           codes, with the test images in the database and then held out of it (training images
           only, so no query has a copy there). Results must be identical.
  sharded  the same search with the codes split over 4 forced CPU devices (a child process with
           XLA_FLAGS=--xla_force_host_platform_device_count=4): identical results, time ratio.
  cold     `jaxhash search` against 1M codes from the shell, of one image (a NumPy scan: JAX is never
           loaded) and of 16 images (compiled by XLA): an empty compilation cache (cold), then the same
           command again (warm), and without the cache.
  pca      ITQ fitted on 1,000 photo-sized vectors (64x64x3 = 12,288 values): seconds and peak memory
           (a child process each); ``--pca-before`` also runs the covariance route of earlier versions.
  device   exact k-NN (k = 100, 64-bit random codes, ``--device-n`` codes, default 10M and 100M) on JAX's
           default device, in queries per second, checked against the NumPy scan, beside what the card
           allows: one read of the codes at its measured memory bandwidth, the XOR/popcounts at its
           measured popcount rate, and the same work as ±1 int8 matrix products at its measured int8
           rate (for ±1 codes q.x = bits - 2 d). Not in the default parts: on a CPU it runs, but says
           that these are not accelerator figures.
Every figure is printed with the instruction-set limit XLA ran under (XLA_FLAGS).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from jaxhash.cli import _output_file, _positive, _positive_list, _seed, run_script, write_json

REPO = Path(__file__).resolve().parents[1]


def timed(fn, repeats: int):
    fn()  # compile, lay out, build tables
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)), out


def real_codes(n: int, n_queries: int, data_dir, rng):
    """ITQ 64-bit codes of MNIST (or the 8x8 digits), replicated to ``n``, most with one bit flipped.

    Returns the data set's name and two ``(database, queries)`` pairs, queried by test images'
    codes: with the test images in the database (so each query has exact copies there), and with
    them held out of it (training images only)."""
    import jaxhash
    from jaxhash.data import load_dataset
    from jaxhash.hashers import to_features

    try:
        dataset = load_dataset("mnist", data_dir=data_dir, progress=False)
        name = "MNIST"
        train, test = to_features(dataset.x_train), to_features(dataset.x_test)
    except (OSError, ValueError):
        dataset = load_dataset("digits")  # no test split: the last fifth plays it
        name = "digits (MNIST not found under --data-dir)"
        features = to_features(dataset.x_train)
        train, test = features[: len(features) * 4 // 5], features[len(features) * 4 // 5 :]
    itq = jaxhash.ITQ(n_bits=64).fit(train)
    train_codes, query_codes = itq.encode(train), itq.encode(test)
    pairs = []
    for base in (np.concatenate([train_codes, query_codes]), train_codes):
        db = base[rng.integers(0, len(base), n)]
        flip = (rng.random(n) < 0.64).astype(np.uint32) << rng.integers(0, 32, n, dtype=np.uint32)  # one bit, 64% of codes
        db[np.arange(n), rng.integers(0, 2, n)] ^= flip
        pairs.append((db, query_codes[rng.integers(0, len(query_codes), n_queries)]))
    return name, pairs[0], pairs[1]


def part_mih(args, rng, records):
    from jaxhash import HashIndex, MultiIndexHashIndex

    for n in args.n:
        kinds = {"random": (rng.integers(0, 2**32, (n, 2), dtype=np.uint64).astype(np.uint32),
                            rng.integers(0, 2**32, (args.queries, 2), dtype=np.uint64).astype(np.uint32))}
        name, with_copies, held_out = real_codes(n, args.queries, args.data_dir, rng)
        kinds[f"ITQ codes of {name}"] = with_copies
        kinds[f"{name}, queries held out"] = held_out
        for kind, (db, queries) in kinds.items():
            flat, multi = HashIndex(64), MultiIndexHashIndex(64)
            flat.add(db)
            multi.add(db)
            t0 = time.perf_counter()
            tables = multi.tables()
            build = time.perf_counter() - t0
            for k in (1, 10, 100):
                t_flat, a = timed(lambda: flat.search(queries, k), args.repeats)
                t_mih, b = timed(lambda: multi.search(queries, k), args.repeats)
                same = all(np.array_equal(x, y) for x, y in zip(a, b))
                record = {"part": "mih", "codes": kind, "n": n, "bits": 64, "k": k, "queries": len(queries),
                          "substrings": len(tables.bounds) - 1, "flat_ms_per_query": 1e3 * t_flat / len(queries),
                          "mih_ms_per_query": 1e3 * t_mih / len(queries), "speedup": t_flat / t_mih,
                          "identical": same, "bytes_per_code": tables.bytes_per_code, "build_seconds": build}
                records.append(record)
                print(f"mih  {kind:>28} n={n:>10,} k={k:>3}: linear {record['flat_ms_per_query']:.3f} ms/q, "
                      f"multi-index {record['mih_ms_per_query']:.3f} ms/q, speed-up {record['speedup']:.2f}x "
                      f"(m={record['substrings']}, {tables.bytes_per_code:.0f} B/code, tables {build:.1f}s; identical: {same})",
                      flush=True)


SHARDED_CHILD = """
import json, sys, time
import jax, numpy as np
from jaxhash import HashIndex
n, q, k, repeats = map(int, sys.argv[1:5])
rng = np.random.default_rng(0)
db = rng.integers(0, 2**32, (n, 2), dtype=np.uint64).astype(np.uint32)
queries = rng.integers(0, 2**32, (q, 2), dtype=np.uint64).astype(np.uint32)
one, split = HashIndex(64), HashIndex(64)
one.add(db)
split.add(db)
split.shard()
def timed(index):
    out = index.search(queries, k)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter(); index.search(queries, k); times.append(time.perf_counter() - t0)
    return float(np.median(times)), out
t_one, a = timed(one)
t_split, b = timed(split)
print(json.dumps({"devices": len(jax.devices()), "one_device_seconds": t_one, "sharded_seconds": t_split,
                  "identical": all(np.array_equal(x, y) for x, y in zip(a, b))}))
"""


def part_faiss(args, records):
    from jaxhash.search import _cpu_flags  # the processor's flags from /proc/cpuinfo, as the layout choice reads them

    flags = _cpu_flags()
    native = "AVX-512 with VPOPCNTDQ" if "avx512_vpopcntdq" in flags else "AVX2" if "avx2" in flags else "unknown"
    runs = [(f"native ({native})", os.environ.get("XLA_FLAGS", ""))]
    if "avx512_vpopcntdq" in flags:
        runs.append(("held to AVX2", (os.environ.get("XLA_FLAGS", "") + " --xla_cpu_max_isa=AVX2").strip()))
    table: dict[int, list[str]] = {}
    finished = []
    for name, xla_flags in runs:
        with tempfile.TemporaryDirectory() as tmp:
            command = [sys.executable, str(REPO / "scripts" / "bench_search.py"), "--queries", str(args.queries),
                       "--n", str(args.faiss_n), "--repeats", str(args.repeats), "--json", f"{tmp}/search.json"]
            out = subprocess.run(command, capture_output=True, text=True, cwd=REPO, env=dict(os.environ, XLA_FLAGS=xla_flags))
            if out.returncode:
                print(f"faiss  {name}: skipped ({out.stderr.strip().splitlines()[-1] if out.stderr.strip() else 'failed'})",
                      flush=True)
                break
            found = json.loads(Path(f"{tmp}/search.json").read_text())
        finished.append(name)
        for record in found:
            records.append({"part": "faiss", "instruction_set": name, **record})
            table.setdefault(record["bits"], []).append(
                f"{record['ratio_faiss_over_jaxhash']:5.2f} (jaxhash {record['jaxhash_seconds'] * 1e3:.0f} ms, "
                f"FAISS {record['faiss_seconds'] * 1e3:.0f} ms, {record['layout']}, equal: "
                f"{record['same_distances_as_faiss'] and record['same_ids_as_faiss']})")
    if not finished:
        return
    print(f"faiss  FAISS / jaxhash, {args.faiss_n:,} random codes, k = 100:  " + "  |  ".join(finished), flush=True)
    for bits, cells in table.items():
        print(f"faiss  {bits:>4} bits: " + "  |  ".join(cells), flush=True)


def device_limits(small: bool, repeats: int = 5) -> dict:
    """Measured rates of the default device: memory read (bytes/s), XOR + popcount + add of uint32
    words (per s), and int8 matrix-product operations (2 per multiply-add, per s). ``small``: sizes
    for a CPU."""
    import jax
    import jax.numpy as jnp

    words = jnp.arange((1 << 22) if small else (1 << 28), dtype=jnp.uint32)  # 16 MiB or 1 GiB
    largest = jax.jit(jnp.max)
    read, _ = timed(lambda: jax.block_until_ready(largest(words)), repeats)
    chained, steps = jnp.arange((1 << 18) if small else (1 << 24), dtype=jnp.uint32), 64

    @jax.jit
    def popcounts(a):
        acc = jnp.zeros_like(a)
        for i in range(steps):  # one fused kernel of independent counts: arithmetic, not memory, bounds it
            acc = acc + jax.lax.population_count(a ^ jnp.uint32((0x9E3779B9 * (i + 1)) & 0xFFFFFFFF))
        return jnp.sum(acc)

    pop, _ = timed(lambda: jax.block_until_ready(popcounts(chained)), repeats)
    side = 512 if small else 8192
    ones = jnp.ones((side, side), jnp.int8)
    product = jax.jit(lambda a, b: jnp.dot(a, b, preferred_element_type=jnp.int32))
    matmul, _ = timed(lambda: jax.block_until_ready(product(ones, ones)), repeats)
    return {"bandwidth_bytes_per_s": words.nbytes / read, "popcounts_per_s": chained.size * steps / pop,
            "int8_ops_per_s": 2 * side**3 / matmul}


def part_device(args, records):
    import jax

    from jaxhash.search import knn_search, knn_search_host, prepare_database

    backend = jax.default_backend()
    device = f"{jax.devices()[0]} ({jax.devices()[0].device_kind})"
    if backend == "cpu":
        print("device: no accelerator here (JAX's backend is the CPU): the figures below are the CPU's, not the GPU "
              "figures this part is for (queries per second at 10M and 100M codes on an accelerator); run it where JAX sees a GPU", flush=True)
    limits = device_limits(small=backend == "cpu")
    print(f"device {device}: memory {limits['bandwidth_bytes_per_s'] / 1e9:.0f} GB/s, XOR+popcount+add "
          f"{limits['popcounts_per_s'] / 1e9:.0f} G words/s, int8 {limits['int8_ops_per_s'] / 1e12:.1f} TOPS (measured)",
          flush=True)
    rng = np.random.default_rng(args.seed)
    k, bits = 100, 64
    queries = rng.integers(0, 2**32, (args.queries, bits // 32), dtype=np.uint32)
    for n in args.device_n:
        db = rng.integers(0, 2**32, (n, bits // 32), dtype=np.uint32)
        t0 = time.perf_counter()
        prepared = prepare_database(db)
        dist, pos = knn_search(queries, prepared, k)
        first = time.perf_counter() - t0
        seconds, _ = timed(lambda: knn_search(queries, prepared, k), args.repeats)
        checked = min(8, len(queries))
        want_d, want_p = knn_search_host(queries[:checked], db, k)
        exact = bool(np.array_equal(dist[:checked], want_d) and np.array_equal(pos[:checked], want_p))
        bounds = {"memory": db.nbytes / limits["bandwidth_bytes_per_s"],  # one read of every code
                  "popcount": len(queries) * n * (bits // 32) / limits["popcounts_per_s"],
                  "int8": 2 * len(queries) * n * bits / limits["int8_ops_per_s"]}
        # the int8 route reads the codes unpacked to one byte per bit: 8x the memory; neither counts the selection
        limit = min(max(bounds["memory"], bounds["popcount"]), max(8 * bounds["memory"], bounds["int8"]))
        record = {"part": "device", "backend": backend, "device": device, "n": n, "bits": bits, "k": k,
                  "queries": len(queries), "seconds": seconds, "queries_per_second": len(queries) / seconds,
                  "first_call_seconds": first, "exact_on_checked_queries": exact, "checked_queries": checked, **limits,
                  **{f"{name}_bound_seconds": value for name, value in bounds.items()}}
        record["best_route_queries_per_second"] = len(queries) / limit
        records.append(record)
        print(f"device n={n:>12,} k={k}: {len(queries):,} queries in {seconds * 1e3:.1f} ms = {len(queries) / seconds:,.0f} q/s "
              f"(first call {first:.1f}s; equal to the NumPy scan on {checked} queries: {exact}); the same work at the measured "
              f"rates: one read of the codes {bounds['memory'] * 1e3:.2f} ms, popcounts {bounds['popcount'] * 1e3:.2f} ms, "
              f"int8 products {bounds['int8'] * 1e3:.2f} ms -> at most about {len(queries) / limit:,.0f} q/s before selection",
              flush=True)


def part_sharded(args, records):
    env = dict(os.environ, JAX_PLATFORMS="cpu",
               XLA_FLAGS=(os.environ.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=4").strip())
    for n in args.n:
        out = subprocess.run([sys.executable, "-c", SHARDED_CHILD, str(n), str(args.queries), "100", str(args.repeats)],
                             capture_output=True, text=True, env=env, cwd=REPO)
        if out.returncode:
            raise SystemExit(out.stderr)
        record = {"part": "sharded", "n": n, "bits": 64, "k": 100, "queries": args.queries, **json.loads(out.stdout.splitlines()[-1])}
        record["ratio_sharded_over_one"] = record["sharded_seconds"] / record["one_device_seconds"]
        records.append(record)
        print(f"sharded n={n:>10,} k=100 over {record['devices']} CPU devices: one device {record['one_device_seconds']:.3f}s, "
              f"sharded {record['sharded_seconds']:.3f}s (sharded/one device {record['ratio_sharded_over_one']:.2f}; identical: "
              f"{record['identical']})", flush=True)


def part_cold(args, records):
    import jaxhash
    from PIL import Image

    from jaxhash import HashIndex, write_index
    from jaxhash.index import ModelRef
    from jaxhash.search import HOST_SEARCH_MAX_QUERIES

    rng = np.random.default_rng(1)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        images = rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
        model = jaxhash.ITQ(n_bits=64).fit(images)
        model.save(tmp / "model")
        index = HashIndex(64, model=ModelRef.of(model, str(tmp / "model")))
        index.add(rng.integers(0, 2**32, (1_000_000, 2), dtype=np.uint64).astype(np.uint32))
        write_index(index, tmp / "codes.jhx")
        queries = []
        for i in range(16):
            Image.fromarray(images[i]).save(tmp / f"query{i}.png")
            queries.append(str(tmp / f"query{i}.png"))
        for n_queries in (1, 16):
            env = dict(os.environ, JAXHASH_CACHE_DIR=str(tmp / f"cache{n_queries}"), JAXHASH_PROGRESS="0")
            env.pop("JAX_COMPILATION_CACHE_DIR", None)
            command = [sys.executable, "-m", "jaxhash.cli", "search", "--model", str(tmp / "model"), "--index",
                       str(tmp / "codes.jhx"), *queries[:n_queries], "--k", "10"]
            times = {}
            for run in ("cold", "warm", "no cache"):
                if run == "no cache":
                    env["JAXHASH_CACHE_DIR"] = "off"
                t0 = time.perf_counter()
                out = subprocess.run(command, capture_output=True, text=True, env=env, cwd=REPO)
                times[run] = time.perf_counter() - t0
                if out.returncode:
                    raise SystemExit(out.stderr)
            record = {"part": "cold", "n": 1_000_000, "bits": 64, "queries": n_queries,
                      **{f"{k.replace(' ', '_')}_seconds": v for k, v in times.items()}}
            records.append(record)
            how = "NumPy scan, no JAX" if n_queries <= HOST_SEARCH_MAX_QUERIES else "compiled by XLA"
            print(f"cold start, jaxhash search of {n_queries} image{'s' if n_queries > 1 else ''} against 1M codes ({how}): "
                  f"cold {times['cold']:.2f}s, warm {times['warm']:.2f}s, without the cache {times['no cache']:.2f}s",
                  flush=True)


PCA_CHILD = """
import resource, sys, time
import numpy as np
from jaxhash import ITQ, baselines
if sys.argv[1] == "covariance":
    baselines._COVARIANCE_MAX_DIM = 1 << 30  # the route of earlier versions
rng = np.random.default_rng(0)
x = rng.random((1000, 12288), dtype=np.float32)
t0 = time.perf_counter()
ITQ(n_bits=64).fit(x)
print(time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6)
"""


def part_pca(args, records):
    for route in (["gram", "covariance"] if args.pca_before else ["gram"]):
        out = subprocess.run([sys.executable, "-c", PCA_CHILD, route], capture_output=True, text=True, cwd=REPO, check=True)
        seconds, peak_gb = map(float, out.stdout.split())
        records.append({"part": "pca", "route": route, "n": 1000, "dim": 12288, "seconds": seconds, "peak_gb": peak_gb})
        print(f"pca  ITQ on 1,000 x 12,288 ({route} route): {seconds:.1f}s, peak memory {peak_gb:.2f} GB", flush=True)


PARTS = ("faiss", "mih", "sharded", "cold", "pca", "device")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=_positive_list, default=[1_000_000, 10_000_000], help="database sizes (default: 1000000,10000000)")
    parser.add_argument("--queries", type=_positive, default=1000)
    parser.add_argument("--faiss-n", type=_positive, default=1_000_000, help="database codes of the faiss part")
    parser.add_argument("--device-n", type=_positive_list, default=[10_000_000, 100_000_000],
                        help="database sizes of the device part (default: 10000000,100000000)")
    parser.add_argument("--repeats", type=_positive, default=3)
    parser.add_argument("--parts", default="faiss,mih,sharded,cold,pca", help=f"comma-separated, of {', '.join(PARTS)}")
    parser.add_argument("--data-dir", default=None, help="folder with mnist/ (the real codes of the mih part)")
    parser.add_argument("--pca-before", action="store_true", help="also time the covariance route (minutes, GBs)")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()
    parts = [part.strip() for part in args.parts.split(",") if part.strip()]
    if not parts or set(parts) - set(PARTS):
        parser.error(f"--parts takes {', '.join(PARTS)} (comma-separated), got {args.parts!r}")
    import jax

    print(f"jax {jax.__version__} on {jax.default_backend()} ({os.cpu_count()} cpus); "
          f"XLA_FLAGS={os.environ.get('XLA_FLAGS', '(none: the best instruction set of this processor)')}", flush=True)
    rng = np.random.default_rng(args.seed)
    records: list[dict] = []
    if "faiss" in parts:
        part_faiss(args, records)
    if "mih" in parts:
        part_mih(args, rng, records)
    if "sharded" in parts:
        part_sharded(args, records)
    if "cold" in parts:
        part_cold(args, records)
    if "pca" in parts:
        part_pca(args, records)
    if "device" in parts:
        part_device(args, records)
    for record in records:
        record.setdefault("xla_flags", os.environ.get("XLA_FLAGS", ""))
    if args.json:
        write_json(args.json, records)


if __name__ == "__main__":
    run_script(main)
