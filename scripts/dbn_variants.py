#!/usr/bin/env python
"""dbn-ae variants beside ITQ on one split: what changes the codes' quality.

    python scripts/dbn_variants.py --data mnist --data-dir ../shared/data --bits 32 --json results/dbn_variants_mnist32.json
"""
from __future__ import annotations

import argparse
import time

import jaxhash
from jaxhash.data import load_dataset, retrieval_split, to_features
from jaxhash.metrics import evaluate
from jaxhash.cli import _output_file, _positive, run_script, write_json

VARIANTS = {
    "cpu-small": {},
    "cpu-small, 30 fine-tuning epochs, code noise 4": {"finetune_epochs": 30, "code_noise": 4.0},
    "1000-500-250 (Hinton's MNIST sizes), 10+20 epochs": {"hidden": (1000, 500, 250), "rbm_epochs": 10, "finetune_epochs": 20},
}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--protocol", default="1k")
    parser.add_argument("--bits", type=_positive, default=32)
    parser.add_argument("--metric", default="map@5000")
    parser.add_argument("--only", default=None, help="comma-separated variant numbers (0-based) to run: "
                        + ", ".join(f"{i} {name}" for i, name in enumerate(VARIANTS)))
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()
    chosen = list(VARIANTS.items())
    if args.only:
        picked = [part.strip() for part in args.only.split(",")]
        if not all(part.isdigit() and int(part) < len(chosen) for part in picked):
            parser.error(f"--only takes variant numbers from 0 to {len(chosen) - 1}, got {args.only!r}")
        chosen = [chosen[int(i)] for i in picked]
    split = retrieval_split(load_dataset(args.data, data_dir=args.data_dir), args.protocol, seed=0)
    xq, xd = to_features(split.query_x), to_features(split.db_x)
    itq = jaxhash.ITQ(n_bits=args.bits, seed=0).fit(xd)
    base = evaluate(args.metric, itq.encode(xq), split.query_y, itq.encode(xd), split.db_y, n_bits=args.bits)
    print(f"{args.data} {args.protocol}, {args.bits} bits, {args.metric}: ITQ {base:.4f}", flush=True)
    records = [{"variant": "itq", "value": base}]
    for name, overrides in chosen:
        t0 = time.perf_counter()
        h = jaxhash.SemanticHasher(n_bits=args.bits, seed=0, preset="cpu-small", progress=False, **overrides).fit(xd)
        value = evaluate(args.metric, h.encode(xq), split.query_y, h.encode(xd), split.db_y, n_bits=args.bits)
        seconds = time.perf_counter() - t0
        records.append({"variant": name, "overrides": {k: list(v) if isinstance(v, tuple) else v for k, v in overrides.items()},
                        "value": value, "seconds": round(seconds, 1), "vs_itq_percent": round(100 * (value / base - 1), 1)})
        print(f"  dbn-ae {name}: {value:.4f} ({100 * (value / base - 1):+.1f}% vs ITQ, {seconds:.0f}s)", flush=True)
    if args.json:
        write_json(args.json, records)


if __name__ == "__main__":
    run_script(main)
