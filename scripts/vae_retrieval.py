#!/usr/bin/env python
"""Retrieval with codes from autoencoders' latent spaces, beside ITQ on pixels.

The ``vae`` and ``sparse-ae`` hashers (Kovalenko's VAE and sparse autoencoder, codes by ITQ on
the latent means), ``ae-umap`` (N2D's autoencoder and UMAP embedding, codes by random projections
of the embedding) and ``dbn-ae`` (Hinton & Salakhutdinov's semantic hashing) at each code length,
on one retrieval protocol: mAP@1000 and mAP@5000 of the Hamming ranking, and of the two-stage
search (the Hamming short-list of 1,000 re-ranked by Euclidean distance in the latent space or
embedding), with ITQ on the pixels as the baseline and the ratio to it.

    python scripts/vae_retrieval.py --data mnist --data-dir ../shared/data --bits 32,64 --json results/vae_retrieval.json
"""
from __future__ import annotations

import argparse
import time

from jaxhash.cli import _output_file, _seed, run_script, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--protocol", default="1k")
    parser.add_argument("--bits", default="32,64")
    parser.add_argument("--methods", default="vae,sparse-ae,ae-umap,dbn-ae")
    parser.add_argument("--preset", default=None, help="one preset for every method (default: each method's own; "
                                                      "vae, sparse-ae: cpu; ae-umap: n2d; dbn-ae: cpu-small)")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--shortlist", type=int, default=1000, help="Hamming short-list re-ranked in the latent space")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()

    import jax

    import jaxhash
    from jaxhash.data import load_dataset, retrieval_split
    from jaxhash.metrics import mean_average_precision, ranking_average_precision

    dataset = load_dataset(args.data, data_dir=args.data_dir, progress=False)
    split = retrieval_split(dataset, args.protocol, seed=args.seed)
    qy, dy = split.query_y, split.db_y
    tops = (1000, 5000)
    print(f"{dataset.name}, protocol {args.protocol}: {len(qy)} queries, {len(dy)} database images; preset "
          f"{args.preset or 'each method default'}; "
          f"jax {jax.__version__} on {jax.default_backend()}", flush=True)
    records = []
    for bits in (int(b) for b in args.bits.split(",")):
        baseline = None
        for method in ["itq", *args.methods.split(",")]:
            options = {} if method == "itq" else {"progress": True, **({"preset": args.preset} if args.preset else {})}
            if args.epochs and method != "itq":
                options["finetune_epochs" if method == "dbn-ae" else "epochs"] = args.epochs
            hasher = jaxhash.make_hasher(method, n_bits=bits, seed=args.seed, **options)
            t0 = time.perf_counter()
            hasher.fit(split.db_x)
            fit_seconds = time.perf_counter() - t0
            db, q = hasher.encode_details(split.db_x), hasher.encode_details(split.query_x)
            record = {"method": method, "bits": bits, "fit_seconds": round(fit_seconds, 1)}
            for top in tops:
                record[f"map@{top}"] = mean_average_precision(q["codes"], qy, db["codes"], dy, top=top)
            if "features" in db:
                index = jaxhash.HashIndex(bits, feature_dim=db["features"].shape[1])
                index.add(db["codes"], features=db["features"])
                for top in tops:
                    _, ranked = index.search_rerank(q["codes"], q["features"], top, max(top, args.shortlist))
                    record[f"two_stage_map@{top}"] = ranking_average_precision(ranked, qy, dy)
            baseline = baseline or record
            record["ratio_to_itq"] = {key: record[key] / baseline[f"map@{key.split('@')[1]}"]
                                      for key in record if key.startswith(("map@", "two_stage_map@"))}
            records.append(record)
            shown = "  ".join(f"{key} {record[key]:.4f} ({record['ratio_to_itq'][key]:.2f}x)" for key in record["ratio_to_itq"])
            print(f"{bits:>3} bits  {method:<10} {shown}  fit {fit_seconds:.0f}s", flush=True)
    if args.json:
        write_json(args.json, {"data": dataset.name, "protocol": args.protocol, "records": records})


if __name__ == "__main__":
    run_script(main)
