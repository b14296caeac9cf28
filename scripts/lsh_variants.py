#!/usr/bin/env python
"""LSH's spread over seeds, centred vs raw features (MNIST pixels, protocol 1k, mAP@all).

LSH is one random draw per seed, so a single table cell says little; this prints mean, sd, min
and max over seeds for both variants, beside the published row (CNNH, AAAI 2014).

    python scripts/lsh_variants.py --data-dir ../shared/data
"""
import argparse

import numpy as np

import jaxhash
from jaxhash.data import load_dataset, retrieval_split, to_features
from jaxhash.cli import _positive, run_script

PUBLISHED = {12: 0.187, 24: 0.209, 32: 0.235, 48: 0.243}

def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--seeds", type=_positive, default=5)
    args = parser.parse_args()

    dataset = load_dataset(args.data, data_dir=args.data_dir)
    split = retrieval_split(dataset, "1k", seed=0)
    xq, xd = to_features(split.query_x), to_features(split.db_x)
    print(f"{dataset.name}, protocol 1k, mAP@all over {args.seeds} seed{'s' if args.seeds != 1 else ''}"
          + (" (published: the MNIST figures of the paper)" if dataset.name == "mnist" else ""))
    for bits, published in PUBLISHED.items():
        line = f"{bits:>3} bits" + (f" (published {published:.3f}):" if dataset.name == "mnist" else ":")
        for centre in (True, False):
            scores = []
            for seed in range(args.seeds):
                h = jaxhash.LSH(n_bits=bits, seed=seed, centre=centre).fit(xd)
                scores.append(jaxhash.mean_average_precision(h.encode(xq), split.query_y, h.encode(xd), split.db_y))
            line += f"  {'centred' if centre else 'raw':>7} mean {np.mean(scores):.3f} sd {np.std(scores):.3f} [{min(scores):.3f}, {max(scores):.3f}]"
        print(line, flush=True)


if __name__ == "__main__":
    run_script(main)
