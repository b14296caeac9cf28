#!/usr/bin/env python
"""The Hamming network as a classifier over packed codes, beside a k-nearest-neighbour vote.

Codes from any registered hasher (default ITQ, 64 bits) on a data set (default MNIST, protocol
1k). Class prototypes are the bitwise majority code of each class in the database; the Hamming
layer scores n_bits - popcount(code xor prototype) and Maxnet picks the class. The k-NN vote uses
the same codes through HashIndex (majority of the k nearest, ties to the nearer class).

    python scripts/hamming_classifier.py --data mnist --data-dir ../shared/data --methods itq,lsh --bits 64
"""
from __future__ import annotations

import argparse
import time

import numpy as np

import jaxhash
from jaxhash import hamming_net as hn
from jaxhash.data import load_dataset, retrieval_split, to_features
from jaxhash.cli import _output_file, _positive, _positive_list, _seed, run_script, write_json


def knn_vote(index_labels, ids, distances, n_classes):
    """Majority class among each row's neighbours; ties go to the class with the nearest member."""
    votes = np.zeros((ids.shape[0], n_classes))
    labels = index_labels[ids]
    for j in range(ids.shape[1]):
        # A vote weighs 1; the tiny bonus for nearer neighbours only orders equal counts.
        np.add.at(votes, (np.arange(ids.shape[0]), labels[:, j]), 1.0 + 1e-6 * (ids.shape[1] - j))
    return votes.argmax(axis=1)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--protocol", default="1k")
    parser.add_argument("--methods", default="itq,lsh")
    parser.add_argument("--bits", type=_positive, default=64)
    parser.add_argument("--k", type=_positive_list, default=[1, 10, 50], help="neighbours for the k-NN vote (comma-separated)")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()

    split = retrieval_split(load_dataset(args.data, data_dir=args.data_dir), args.protocol, seed=args.seed)
    xq, xd = to_features(split.query_x), to_features(split.db_x)
    n_classes = int(split.db_y.max()) + 1
    records = []
    print(f"{args.data}, protocol {args.protocol}: {len(xq)} queries classified with {len(xd)} labelled codes, {args.bits} bits")
    for method in args.methods.split(","):
        hasher = jaxhash.make_hasher(method, n_bits=args.bits, seed=args.seed).fit(xd)
        cq, cd = hasher.encode(xq), hasher.encode(xd)
        t0 = time.perf_counter()
        classes, prototypes = hn.majority_prototypes(cd, split.db_y, args.bits)
        winner, tie = hn.classify_codes(prototypes, cq, args.bits)
        hamming_acc = float(np.mean(classes[winner] == split.query_y))
        t_net = time.perf_counter() - t0
        row = {"data": args.data, "method": method, "bits": args.bits, "hamming_network_accuracy": hamming_acc,
               "hamming_network_ties": int(tie.sum()), "hamming_network_seconds": round(t_net, 3)}
        index = jaxhash.HashIndex(args.bits)
        index.add(cd)
        line = f"  {method:>5}: Hamming network (class majority prototypes + Maxnet) {hamming_acc:.4f} ({int(tie.sum())} ties)"
        for k in args.k:
            d, ids = index.search(cq, k)
            acc = float(np.mean(knn_vote(split.db_y, ids, d, n_classes) == split.query_y))
            row[f"knn{k}_accuracy"] = acc
            line += f" | {k}-NN vote {acc:.4f}"
        records.append(row)
        print(line, flush=True)
    if args.json:
        write_json(args.json, records)


if __name__ == "__main__":
    run_script(main)
