#!/usr/bin/env python
"""The search service end to end over HTTP: index build rate, then search latency with 1,000,000 codes.

1. Trains a cnn-softmax model (Hu & Feng) for one epoch on a photo folder (speed, not accuracy,
   is measured here), or takes a saved one (--model).
2. Starts ``jaxhash serve`` on loopback in its own process, imports the model, creates an index
   and indexes the folder through the API: the index build rate (images per second, decoding and
   encoding included) is the job's own count over its wall time.
3. Fills the index up to --codes entries (random codes and features beside the real photos) and
   sends --queries uploads from --clients concurrent clients: p50 / p99 latency of upload ->
   JSON answer (image decode and CNN encoding included), failed requests, and the codes compared
   per second by the search itself (in this process, on the same index). Each client is a process
   of its own; all of them share the machine with the server.

    python scripts/bench_serve.py --photos ../shared/data/tiny-imagenet-40.tar.gz
    python scripts/bench_serve.py --photos PHOTOS/ --codes 1000000 --queries 1000 --clients 8
"""
from __future__ import annotations

import argparse
import multiprocessing
import os
import platform
import socket
import statistics
import tarfile
import tempfile
import time
from pathlib import Path

import numpy as np
from jaxhash.cli import _output_file, write_json

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def client(base: str, index_id: int, k: int, uploads: list) -> tuple[list, list, list]:
    """One client: its uploads one after the other; ``(latencies, failed latencies, server seconds)``."""
    import httpx

    latencies, failures, server_seconds = [], [], []
    with httpx.Client(timeout=60) as http:
        for q in uploads:
            t0 = time.perf_counter()
            try:
                r = http.post(f"{base}/api/search", data={"index_id": index_id, "k": k}, files={"file": ("q.jpg", q)})
                ok = r.status_code == 200 and len(r.json()["results"]) == k
            except httpx.HTTPError:
                ok = False
            (latencies if ok else failures).append(time.perf_counter() - t0)
            if ok:
                server_seconds.append(r.json()["seconds"])
    return latencies, failures, server_seconds


def random_codes(rng, n: int, n_bits: int) -> np.ndarray:
    """``(n, n_words)`` uint32 codes of uniformly random ``n_bits`` bits (the unused high bits zero)."""
    codes = rng.integers(0, 2**32, size=(n, -(-n_bits // 32)), dtype=np.uint64).astype(np.uint32)
    if n_bits % 32:
        codes[:, -1] &= np.uint32((1 << (n_bits % 32)) - 1)
    return codes


def photo_folder(path: Path, work: Path) -> Path:
    if path.is_dir():
        return path.resolve()
    target = work / "photos"
    with tarfile.open(path) as tar:
        tar.extractall(target, filter="data")
    return target


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--photos", default=str(REPO.parent / "shared/data/tiny-imagenet-40.tar.gz"),
                        help="a folder (or .tar.gz) with one sub-folder per class")
    parser.add_argument("--model", default=None, help="a model saved by jaxhash fit (default: train cnn-softmax one epoch)")
    parser.add_argument("--codes", type=int, default=1_000_000, help="entries in the searched index")
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--bits", type=int, default=64)
    parser.add_argument("--preset", default="cpu", help="of the cnn-softmax model trained when no --model is given")
    parser.add_argument("--json", default=None, type=_output_file, help="write the figures here too")
    args = parser.parse_args()

    import httpx
    import jax

    from jaxhash.data import load_image_folder
    from jaxhash.hashers import make_hasher
    from jaxhash.index import read_index, write_index
    from jaxhash.serve import start_server_process

    work = Path(tempfile.mkdtemp(prefix="jaxhash-bench-serve-"))
    photos = photo_folder(Path(args.photos), work)
    files = sorted(p for p in photos.rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))
    print(f"jax {jax.__version__} on {jax.default_backend()} ({os.cpu_count()} cpus, {platform.processor() or platform.machine()}); "
          f"{len(files)} photos in {photos}; XLA_FLAGS={os.environ.get('XLA_FLAGS', '')!r}", flush=True)
    model = args.model
    if model is None:
        size = make_hasher("cnn-softmax", preset=args.preset).input_size()
        sets = load_image_folder(photos, image_size=size, channels=3, progress=False)
        images = np.concatenate([s.images for s in sets.values()])
        labels = np.concatenate([s.labels for s in sets.values()])
        t0 = time.perf_counter()
        hasher = make_hasher("cnn-softmax", n_bits=args.bits, preset=args.preset, epochs=1, progress=False)
        hasher.fit(images, labels)
        model = str(hasher.save(work / "model"))
        print(f"trained cnn-softmax ({args.bits} bits, preset {args.preset}, 1 epoch) in {time.perf_counter() - t0:.1f} s", flush=True)

    port = free_port()
    base = f"http://127.0.0.1:{port}"
    log = open(work / "server.log", "w")
    server = start_server_process(work / "data", port, [photos, Path(model).parent], ["--log-level", "warning"], log,
                                  env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        model_id = httpx.post(f"{base}/api/models/import", json={"path": model}, timeout=60).json()["id"]
        index_id = httpx.post(f"{base}/api/indexes", json={"name": "bench", "model_id": model_id}, timeout=60).json()["id"]
        job = httpx.post(f"{base}/api/indexes/{index_id}/folder", json={"folder": str(photos)}, timeout=60).json()
        while (record := httpx.get(f"{base}/api/jobs/{job['id']}").json())["status"] in ("queued", "running"):
            time.sleep(0.2)
        seconds = record["finished"] - record["started"]
        build_rate = record["result"]["added"] / seconds
        print(f"index build: {record['result']['added']} images from JPEG files in {seconds:.1f} s = {build_rate:,.0f} images/s "
              f"(read, hash, decode, resize, encode, store; job {record['status']})", flush=True)

        # Fill the index to --codes entries beside the real photos, as its file, then let the server reload it.
        path = work / "data" / "indexes" / f"{index_id}.jhx"
        index = read_index(path)
        extra = args.codes - index.ntotal
        rng = np.random.default_rng(0)
        if extra > 0:
            codes = random_codes(rng, extra, index.n_bits)
            feats = rng.random((extra, index.feature_dim), dtype=np.float32) if index.feature_dim else None
            index.add_with_ids(codes, np.arange(10**8, 10**8 + extra, dtype=np.int64), features=feats)
            write_index(index, path)
        print(f"index holds {index.ntotal:,} codes of {index.n_bits} bits", flush=True)

        uploads = [files[i].read_bytes() for i in rng.integers(0, len(files), size=args.queries)]
        warm = httpx.post(f"{base}/api/search", data={"index_id": index_id, "k": args.k},
                          files={"file": ("q.jpg", uploads[0])}, timeout=120)
        assert warm.status_code == 200, warm.text
        for q in uploads[:10]:  # compile every shape once
            httpx.post(f"{base}/api/search", data={"index_id": index_id, "k": args.k}, files={"file": ("q.jpg", q)}, timeout=120)

        # Each client is a process of its own, as separate users are: one process's threads would
        # share one interpreter lock and time each other's Python.
        context = multiprocessing.get_context("spawn")
        parts = [uploads[c :: args.clients] for c in range(args.clients)]
        t0 = time.perf_counter()
        with context.Pool(args.clients) as pool:
            answers = pool.starmap(client, [(base, index_id, args.k, part) for part in parts])
        latencies = [t for a in answers for t in a[0]]
        failures = [t for a in answers for t in a[1]]
        server_seconds = [t for a in answers for t in a[2]]
        wall = time.perf_counter() - t0
    finally:
        server.terminate()
        server.wait(30)
        log.close()

    ms = np.asarray(latencies) * 1000
    p50, p99 = (float(np.percentile(ms, q)) for q in (50, 99)) if len(ms) else (float("nan"),) * 2
    print(f"search over HTTP, {args.queries} uploads from {args.clients} concurrent clients, {index.ntotal:,} codes, k={args.k}: "
          f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, {len(failures)} failed, {len(latencies) / wall:.1f} queries/s "
          f"(server-side p50 {1000 * statistics.median(server_seconds):.1f} ms incl. decode + encode)", flush=True)

    # The scan itself, in this process: codes compared per second for one query at a time.
    queries = random_codes(np.random.default_rng(1), 200, index.n_bits)
    index.search(queries[:1], args.k)
    t0 = time.perf_counter()
    for q in queries:
        index.search(q[None], args.k)
    per_query = (time.perf_counter() - t0) / len(queries)
    print(f"exact search of one query: {1000 * per_query:.2f} ms = {index.ntotal / per_query / 1e6:,.0f} million codes compared "
          f"per second (Hu & Feng ask > 10,000 images per second)", flush=True)
    record = {"codes": index.ntotal, "bits": index.n_bits, "queries": args.queries, "clients": args.clients, "p50_ms": p50,
              "p99_ms": p99, "failed": len(failures), "queries_per_s": len(latencies) / wall, "build_images_per_s": build_rate,
              "search_ms": 1000 * per_query, "codes_per_s": index.ntotal / per_query, "xla_flags": os.environ.get("XLA_FLAGS", "")}
    if args.json:
        write_json(args.json, record)


if __name__ == "__main__":
    main()
