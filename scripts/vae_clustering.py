#!/usr/bin/env python
"""Clustering images by visual similarity with a variational autoencoder, reproduced.

Kovalenko's route ("Clustering images by visual similarity with variational autoencoders",
Southern Federal University, 2018): a convolutional VAE (and, for comparison, a sparse
autoencoder with an L1 penalty on its code) learns a latent space without labels; PCA and t-SNE
(and UMAP, where umap-learn is installed) reduce it; k-means (or a Gaussian mixture) clusters
it; the M most similar images to a query are its M nearest latent vectors.

Prints clustering accuracy (best one-to-one matching of clusters to classes), NMI and ARI for
k-means on pixels, on PCA of the pixels, on each latent space, and on its t-SNE / UMAP embedding.
Draws, as PNG under --out: reconstructions and random samples, the PCA / t-SNE / UMAP scatter
plots side by side coloured by true class (the paper's comparison), the latent space coloured by
cluster, and queries with their M nearest images.

    python scripts/vae_clustering.py --data mnist --data-dir ../shared/data --out results/vae_clustering
    python scripts/vae_clustering.py --data digits --preset tiny --limit 600 --out /tmp/vae   # seconds
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--preset", default="cpu", help="tiny, cpu, gpu")
    parser.add_argument("--epochs", type=int, default=None)
    parser.add_argument("--latent-dim", type=int, default=10)
    parser.add_argument("--limit", type=int, default=None, help="use a random subset of N images (both splits pooled)")
    parser.add_argument("--embed-limit", type=int, default=5000, help="points given to t-SNE and drawn (t-SNE is slow)")
    parser.add_argument("--reductions", default="pca,tsne,umap", help="of the VAE latent space, drawn side by side")
    parser.add_argument("--algorithm", default="kmeans", choices=("kmeans", "gmm"))
    parser.add_argument("--m", type=int, default=8, help="nearest images shown per query")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="results/vae_clustering")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()

    import jax

    import jaxhash
    from jaxhash import cluster, vae
    from jaxhash.data import load_dataset
    from jaxhash.images import to_features
    from jaxhash.plots import GridCell, draw_result_grid, draw_scatter_panels
    from jaxhash.search import euclidean_knn

    dataset = load_dataset(args.data, data_dir=args.data_dir, progress=False)
    images = np.concatenate([dataset.x_train, dataset.x_test]) if len(dataset.x_test) else dataset.x_train
    labels = np.concatenate([dataset.y_train, dataset.y_test]) if len(dataset.x_test) else dataset.y_train
    rng = np.random.default_rng(args.seed)
    if args.limit and args.limit < len(images):
        keep = np.sort(rng.choice(len(images), args.limit, replace=False))
        images, labels = images[keep], labels[keep]
    k = len(np.unique(labels))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{dataset.name}: {len(images)} images {'x'.join(map(str, images.shape[1:]))}, k = {k}; preset {args.preset}, "
          f"latent {args.latent_dim}; jax {jax.__version__} on {jax.default_backend()}")

    key = jax.random.key(args.seed)
    records, models, latents = [], {}, {}

    def score(features_name, reduction, points, seconds):
        t0 = time.perf_counter()
        assigned = (cluster.gaussian_mixture(key, points, k) if args.algorithm == "gmm" else cluster.kmeans(key, points, k)).labels
        record = {"features": features_name, "reduction": reduction, "algorithm": args.algorithm, "images": len(points),
                  "accuracy": cluster.clustering_accuracy(labels[: len(points)], assigned),
                  "nmi": cluster.normalized_mutual_info(labels[: len(points)], assigned),
                  "ari": cluster.adjusted_rand_index(labels[: len(points)], assigned),
                  "seconds": round(seconds + time.perf_counter() - t0, 2)}
        records.append(record)
        print(f"  {features_name:<10} {reduction:<6} {record['images']:>6}  accuracy {record['accuracy']:.4f}  "
              f"NMI {record['nmi']:.4f}  ARI {record['ari']:.4f}  {record['seconds']:.1f}s", flush=True)
        return assigned

    pixels = to_features(images)
    print("clustering (accuracy: best one-to-one matching of clusters to classes)")
    score("pixels", "-", pixels, 0.0)
    t0 = time.perf_counter()
    score("pixels", "pca50", cluster.pca(pixels, min(50, pixels.shape[1]), args.seed), time.perf_counter() - t0)

    for method in ("vae", "sparse-ae"):
        options = {"epochs": args.epochs} if args.epochs else {}
        hasher = jaxhash.make_hasher(method, n_bits=args.latent_dim, latent_dim=args.latent_dim, preset=args.preset,
                                     seed=args.seed, **options)
        t0 = time.perf_counter()
        hasher.fit(images)
        latents[method] = hasher.latents(images)
        models[method] = hasher
        train_seconds = time.perf_counter() - t0
        print(f"{method}: trained in {train_seconds:.1f}s ({hasher.history_[-1]})")
        assigned = score(method, "-", latents[method], train_seconds)
        if method == "vae":
            vae_clusters = assigned

    # Reductions of the VAE's latent space on a subset (t-SNE is quadratic-ish): the paper's comparison.
    n_embed = min(args.embed_limit, len(images))
    subset = latents["vae"][:n_embed]
    panels = []
    for reduction in args.reductions.split(","):
        t0 = time.perf_counter()
        try:
            points = cluster.embed(subset, reduction, 2, args.seed)
        except ImportError as err:
            print(f"  {reduction}: skipped ({err})")
            continue
        seconds = time.perf_counter() - t0
        score("vae", reduction, points, seconds)
        panels.append((f"VAE latent, {reduction.upper() if reduction != 'tsne' else 't-SNE'}", points, labels[:n_embed]))
    figures = [draw_scatter_panels(out / "latent_by_class.png", panels, dataset.class_names)]
    if panels:  # the clusters of the latent space, drawn where neighbourhoods are kept (t-SNE or UMAP when there)
        title, points, _ = next((p for p in panels if "PCA" not in p[0]), panels[0])
        figures.append(draw_scatter_panels(out / "latent_by_cluster.png",
                                           [(f"{title}, coloured by {args.algorithm} cluster of the latent space", points,
                                             vae_clusters[:n_embed])]))

    # Reconstructions (top: originals) and random samples of the VAE.
    hasher = models["vae"]
    model = hasher._model()
    shown = images[rng.choice(len(images), 10, replace=False)]
    recon = vae.reconstruct(model, hasher.params_, shown)
    samples = vae.generate(model, hasher.params_, jax.random.fold_in(key, 1), 10)
    cell = lambda img, caption: GridCell(img, caption)  # noqa: E731
    figures.append(draw_result_grid(out / "reconstructions.png",
                                    [(cell(a, "original"), [cell(b, "reconstructed")]) for a, b in zip(shown[:6], recon[:6])]
                                    + [(cell(samples[0], "sample"), [cell(s, "sample") for s in samples[1:6]])]))

    # The M most similar images: nearest latent means (Euclidean), the query itself left out.
    queries = rng.choice(len(images), 6, replace=False)
    dist, pos = euclidean_knn(latents["vae"][queries], latents["vae"], args.m + 1)
    rows, same = [], []
    names = dataset.class_names
    for q, d_row, p_row in zip(queries, dist, pos):
        hits = [(d, p) for d, p in zip(d_row, p_row) if p != q][: args.m]
        same.extend(labels[p] == labels[q] for _, p in hits)
        rows.append((GridCell(images[q], "query", names[labels[q]]),
                     [GridCell(images[p], f"d={d:.2f}", names[labels[p]], bool(labels[p] == labels[q])) for d, p in hits]))
    figures.append(draw_result_grid(out / "nearest.png", rows))
    print(f"M = {args.m} most similar by latent distance: {np.mean(same):.3f} of them share the query's class")
    print("figures: " + ", ".join(str(f) for f in figures))
    if args.json:
        Path(args.json).write_text(json.dumps({"data": dataset.name, "images": len(images), "records": records,
                                               "nearest_same_class": float(np.mean(same))}, indent=2))


if __name__ == "__main__":
    main()
