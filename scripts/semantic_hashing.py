#!/usr/bin/env python
"""Semantic hashing of images with a DBN-pretrained deep autoencoder, reproduced.

The method is Salakhutdinov & Hinton's semantic hashing (2009) with the deep autoencoder of Hinton
& Salakhutdinov (2006); the setting is that of the Russian-language paper on semantic coding of
images with deep autoassociative networks that jaxhash reproduces. The default is that paper's
exact setting (preset "paper"): CIFAR-10 standardised (per-pixel mean
removed, divided by the global standard deviation), 3072-4096-2048-1024-512-256, 100 epochs per
RBM, mini-batches of 100, learning rate 0.001 (Gaussian RBM) and 0.01 (binary RBMs), momentum
0.9, then 150 epochs of fine-tuning at 1e-6 with momentum 0.9 -- hours on a CPU, minutes on a
GPU. ``--preset cpu-small`` or ``--preset tiny`` run on a CPU in minutes or seconds.

Writes PNGs like that paper's figures: originals beside reconstructions (its figure 6), queries
with their nearest images and Hamming distances (figures 7-8), and the fraction of same-class
images against Hamming distance (its closing observation); ``--json`` gets mAP and time per stage.

    python scripts/semantic_hashing.py --data-dir ../shared/data --preset cpu-small --bits 64 --out results/semantic_hashing
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from jaxhash.cli import _output_file, _positive, _seed, run_script, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="cifar10")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--protocol", default="1k")
    parser.add_argument("--preset", default="paper", help="paper (the published CIFAR-10 setting), cpu-small, tiny")
    parser.add_argument("--bits", type=_positive, default=256)
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--limit", type=_positive, default=None, help="train on the first N database images only")
    parser.add_argument("--checkpoint-dir", default=None)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--metric", default="map@1000")
    parser.add_argument("--out", default="results/semantic_hashing")
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()
    if args.resume and args.checkpoint_dir is None:
        parser.error("--resume continues from checkpoints: give the folder they are in, --checkpoint-dir DIR --resume")

    import jax

    import jaxhash
    from jaxhash.data import load_dataset, retrieval_split, to_features
    from jaxhash.metrics import evaluate

    dataset = load_dataset(args.data, data_dir=args.data_dir)
    split = retrieval_split(dataset, args.protocol, seed=args.seed)
    xq = to_features(split.query_x)  # for the figures
    train = split.db_x[: args.limit] if args.limit else split.db_x  # images: the model records their shape
    print(f"{dataset.name}, protocol {args.protocol}: {len(xq)} queries, {len(split.db_x)} database images; training on {len(train)}; "
          f"preset {args.preset}, {args.bits} bits; jax {jax.__version__} on {jax.default_backend()}")
    hasher = jaxhash.SemanticHasher(n_bits=args.bits, seed=args.seed, preset=args.preset, checkpoint_dir=args.checkpoint_dir,
                                    resume=args.resume)
    t0 = time.perf_counter()
    hasher.fit(train)
    fit_seconds = time.perf_counter() - t0
    print(f"layers {'-'.join(map(str, hasher.layer_sizes_))}; training took {fit_seconds:.1f}s")
    for stage in dict.fromkeys(r["stage"] for r in hasher.history_):
        last = [r for r in hasher.history_ if r["stage"] == stage][-1]
        seconds = hasher.stage_seconds_.get(stage)
        print(f"  {stage}: {last['epoch']} epochs, final reconstruction error {last['reconstruction_error']:.4f}"
              + (f", {seconds:.1f}s" if seconds is not None else ""))
    cq, cd = hasher.encode(split.query_x), hasher.encode(split.db_x)
    value = evaluate(args.metric, cq, split.query_y, cd, split.db_y, n_bits=args.bits)
    print(f"{args.metric} = {value:.4f}")

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"data": dataset.name, "protocol": args.protocol, "preset": args.preset, "bits": args.bits,
              "layer_sizes": list(hasher.layer_sizes_), "fit_seconds": round(fit_seconds, 1), "metric": args.metric,
              "value": round(value, 6), "history": hasher.history_, "backend": jax.default_backend(),
              "stage_seconds": hasher.stage_seconds_}
    if args.json:
        write_json(args.json, record)
    draw(out, hasher, split, xq, cq, cd, dataset)


def draw(out, hasher, split, xq, cq, cd, dataset):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'jaxhash[plots]'): no figures")
        return
    import jax.numpy as jnp

    import jaxhash
    from jaxhash.codes import pairwise_hamming

    shape = split.query_x.shape[1:]
    cmap = "gray" if shape[-1] == 1 else None

    def show(ax, flat):
        img = np.clip(flat.reshape(shape), 0, 1)
        ax.imshow(img.squeeze(), cmap=cmap)
        ax.axis("off")

    # Figure 6: originals and their reconstructions (queries are sorted by class: spread the picks).
    spread = np.linspace(0, len(xq) - 1, 10).astype(int)
    recon = hasher.reconstruct(xq[spread])
    fig, axes = plt.subplots(2, 10, figsize=(10, 2.3))
    for i, q in enumerate(spread):
        show(axes[0, i], xq[q])
        show(axes[1, i], recon[i])
    axes[0, 0].set_title("originals", fontsize=8, loc="left")
    axes[1, 0].set_title("reconstructions", fontsize=8, loc="left")
    fig.tight_layout()
    fig.savefig(out / "reconstructions.png", dpi=110)
    plt.close(fig)

    # Figures 7-8: queries and their nearest images with Hamming distances.
    index = jaxhash.HashIndex(hasher.n_bits)
    index.add(cd)
    picks = np.linspace(0, len(xq) - 1, 4).astype(int)
    dist, ids = index.search(cq[picks], 8)
    fig, axes = plt.subplots(4, 9, figsize=(9, 4.6))
    for r, q in enumerate(picks):
        show(axes[r, 0], xq[q])
        axes[r, 0].set_title(f"query: {dataset.class_names[split.query_y[q]]}"[:16], fontsize=7, color="red")
        for c in range(8):
            same = split.db_y[ids[r, c]] == split.query_y[q]
            show(axes[r, c + 1], to_flat(split.db_x[ids[r, c]]))
            axes[r, c + 1].set_title(f"d={dist[r, c]}", fontsize=7, color="green" if same else "black")
    fig.tight_layout()
    fig.savefig(out / "nearest.png", dpi=110)
    plt.close(fig)

    # Closing observation: the nearer in Hamming distance, the more often the same class.
    n_bits = hasher.n_bits
    same_counts = np.zeros(n_bits + 1)
    all_counts = np.zeros(n_bits + 1)
    for start in range(0, len(cq), 100):
        d = np.asarray(pairwise_hamming(jnp.asarray(cq[start : start + 100]), jnp.asarray(cd)))
        same = split.query_y[start : start + 100, None] == split.db_y[None, :]
        all_counts += np.bincount(d.ravel(), minlength=n_bits + 1)
        same_counts += np.bincount(d.ravel(), weights=same.ravel().astype(float), minlength=n_bits + 1)
    keep = all_counts >= 20
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.plot(np.flatnonzero(keep), same_counts[keep] / all_counts[keep], ".-")
    ax.axhline(np.mean(split.db_y[None, :] == split.query_y[:, None]), color="gray", ls=":", label="chance")
    ax.set_xlabel("Hamming distance to the query")
    ax.set_ylabel("fraction of the same class")
    ax.set_title(f"{dataset.name}, {n_bits}-bit dbn-ae codes", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "same_class_vs_distance.png", dpi=110)
    plt.close(fig)
    print(f"wrote {out}/reconstructions.png, nearest.png, same_class_vs_distance.png")


def to_flat(image):
    return np.asarray(image, np.float32).reshape(-1) / 255.0


if __name__ == "__main__":
    run_script(main)
