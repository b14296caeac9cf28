#!/usr/bin/env python
"""Clustering images by visual similarity with a variational autoencoder, reproduced.

Kovalenko's route ("Clustering images by visual similarity with variational autoencoders",
Southern Federal University, 2018): a convolutional VAE (and, for comparison, a sparse
autoencoder with an L1 penalty on its code) learns a latent space without labels; PCA and t-SNE
(and UMAP, where umap-learn is installed) reduce it; k-means (or a Gaussian mixture) clusters
it; the M most similar images to a query are its M nearest latent vectors. Beside them, N2D's route
(McConville et al., "N2D: (Not Too) Deep Clustering via Clustering the Local Manifold of an
Autoencoded Embedding"): a fully connected autoencoder (preset n2d), UMAP of every latent space to
10 dimensions (n_neighbors 20, min_dist 0) and a Gaussian mixture.

Prints clustering accuracy (best one-to-one matching of clusters to classes), NMI and ARI for
k-means on pixels, on PCA of the pixels, on each latent space, on its 10-D UMAP (+ Gaussian
mixture) and on 2-D PCA / t-SNE / UMAP of a subset. Draws, as PNG under --out: reconstructions
and random samples, the PCA / t-SNE / UMAP scatter plots side by side coloured by true class (the
paper's comparison; latent_by_class.png for the VAE, latent_by_class_ae.png for N2D's
autoencoder), the latent space coloured by cluster, and queries with their M nearest images.

    python scripts/vae_clustering.py --data mnist --data-dir ../shared/data --out results/vae_clustering
    python scripts/vae_clustering.py --data digits --preset tiny --limit 600 --out /tmp/vae   # seconds
"""
from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np

from jaxhash.cli import _image_size, _output_file, _positive, _seed, run_script, write_json


def _umap_dims(text: str) -> int:
    from jaxhash.cluster import MAX_FULL_COVARIANCE_DIM  # a Gaussian mixture of full covariances is drawn on them

    value = int(text) if text.strip().isdigit() else -1
    if not 0 <= value <= MAX_FULL_COVARIANCE_DIM:
        raise argparse.ArgumentTypeError(f"expected 0 (skip) to {MAX_FULL_COVARIANCE_DIM}, got {text!r}")
    return value


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    pass


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    parser.add_argument("--data", default="mnist", help="data set name or image folder (class/*.jpg), or its .tar.gz")
    parser.add_argument("--data-dir", default=None, help="folder holding the named data sets")
    parser.add_argument("--image-size", type=_image_size, default=None, metavar="SIZE",
                        help="resize every image to SIZE or HEIGHTxWIDTH (default: a folder of mixed sizes goes to its "
                             "most common size, with a note)")
    parser.add_argument("--methods", default="vae,sparse-ae,ae", help="latent spaces to cluster: vae, sparse-ae, ae")
    parser.add_argument("--preset", default="cpu", help="of vae and sparse-ae: tiny, cpu, gpu")
    parser.add_argument("--ae-preset", default="n2d", help="of ae: n2d (N2D's 784-500-500-2000-10), tiny, cpu, gpu")
    parser.add_argument("--umap-dims", type=_umap_dims, metavar="0..128", default=10,
                        help="N2D's step: UMAP of every latent space to this many dims + Gaussian mixture (0: skip)")
    parser.add_argument("--epochs", type=_positive, default=None, help="of vae and sparse-ae (default: the preset's)")
    parser.add_argument("--ae-epochs", type=_positive, default=None, help="of ae (default: the preset's; n2d: 30)")
    parser.add_argument("--batch-size", type=_positive, default=None, help="of every model (default: the presets')")
    parser.add_argument("--latent-dim", type=_positive, default=10)
    parser.add_argument("--limit", type=_positive, default=None, help="use a random subset of N images (both splits pooled)")
    parser.add_argument("--embed-limit", type=_positive, default=5000, help="points given to t-SNE and drawn (t-SNE is slow)")
    parser.add_argument("--reductions", default="pca,tsne,umap", help="2-D, of each latent space, drawn side by side")
    parser.add_argument("--algorithm", default="kmeans", choices=("kmeans", "gmm"))
    parser.add_argument("--m", type=_positive, default=8, help="nearest images shown per query")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--out", default="results/vae_clustering")
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    unknown = sorted(set(methods) - {"vae", "sparse-ae", "ae"})
    if unknown or not methods:
        parser.error(f"--methods takes vae, sparse-ae and ae, got {args.methods!r}")
    from jaxhash.baselines import RoundingNoiseBits
    from jaxhash.cluster import EMBEDDINGS

    reductions = [r.strip() for r in args.reductions.split(",") if r.strip()]
    if set(reductions) - set(EMBEDDINGS):
        parser.error(f"--reductions takes {', '.join(EMBEDDINGS[:-1])} and {EMBEDDINGS[-1]}, got {args.reductions!r}")
    warnings.formatwarning = lambda message, *rest, **kw: f"note: {message}\n"  # jaxhash's notes, one line each
    # the hashers' codes (ITQ of each latent space) go unused here, and so does their note about bits
    warnings.simplefilter("ignore", RoundingNoiseBits)
    run(args, methods, reductions)


def run(args, methods: list[str], reductions: list[str]) -> None:
    import jax

    import jaxhash
    from jaxhash import cluster, vae
    from jaxhash.data import load_dataset
    from jaxhash.images import to_features
    from jaxhash.plots import GridCell, draw_result_grid, draw_scatter_panels
    from jaxhash.search import euclidean_knn

    dataset = load_dataset(args.data, data_dir=args.data_dir, progress=False, image_size=args.image_size,
                           mixed_sizes="most common")
    images = np.concatenate([dataset.x_train, dataset.x_test]) if len(dataset.x_test) else dataset.x_train
    labels = np.concatenate([dataset.y_train, dataset.y_test]) if len(dataset.x_test) else dataset.y_train
    rng = np.random.default_rng(args.seed)
    if args.limit and args.limit < len(images):
        keep = np.sort(rng.choice(len(images), args.limit, replace=False))
        images, labels = images[keep], labels[keep]
    k = len(np.unique(labels))
    n_embed = min(args.embed_limit, len(images))
    if n_embed < max(k, 4) and reductions:
        raise ValueError(f"--embed-limit {args.embed_limit} leaves too few points to embed and cluster into {k} clusters: "
                         f"use at least {max(k, 4)}, or --reductions ''")
    if args.umap_dims > cluster.max_embed_dims("umap", len(images)):
        raise ValueError(f"--umap-dims {args.umap_dims} is too many for UMAP of {len(images)} images: use at most "
                         f"{max(0, cluster.max_embed_dims('umap', len(images)))} (0 skips it)")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print(f"{dataset.name}: {len(images)} images {'x'.join(map(str, images.shape[1:]))}, k = {k}; preset {args.preset} "
          f"(ae: {args.ae_preset}), latent {args.latent_dim}; jax {jax.__version__} on {jax.default_backend()}")

    key = jax.random.key(args.seed)
    records, models, latents = [], {}, {}

    def score(features_name, reduction, points, seconds, algorithm=args.algorithm):
        t0 = time.perf_counter()
        assigned = (cluster.gaussian_mixture(key, points, k) if algorithm == "gmm" else cluster.kmeans(key, points, k)).labels
        record = {"features": features_name, "reduction": reduction, "algorithm": algorithm, "images": len(points),
                  "accuracy": cluster.clustering_accuracy(labels[: len(points)], assigned),
                  "nmi": cluster.normalized_mutual_info(labels[: len(points)], assigned),
                  "ari": cluster.adjusted_rand_index(labels[: len(points)], assigned),
                  "seconds": round(seconds + time.perf_counter() - t0, 2)}
        records.append(record)
        print(f"  {features_name:<10} {reduction:<6} {algorithm:<6} {record['images']:>6}  accuracy {record['accuracy']:.4f}  "
              f"NMI {record['nmi']:.4f}  ARI {record['ari']:.4f}  {record['seconds']:.1f}s", flush=True)
        return assigned

    pixels = to_features(images)
    print("clustering (accuracy: best one-to-one matching of clusters to classes)")
    score("pixels", "-", pixels, 0.0)
    t0 = time.perf_counter()
    pca_dims = min(50, *pixels.shape)
    score("pixels", f"pca{pca_dims}", cluster.pca(pixels, pca_dims, args.seed), time.perf_counter() - t0)

    try:
        cluster.require_umap()
        umap_missing = None
    except ImportError as err:
        umap_missing = str(err)
    clusters = {}
    for method in methods:
        epochs = args.ae_epochs if method == "ae" else args.epochs
        options = {name: value for name, value in (("epochs", epochs), ("batch_size", args.batch_size)) if value}
        preset = args.ae_preset if method == "ae" else args.preset
        hasher = jaxhash.make_hasher(method, n_bits=args.latent_dim, latent_dim=args.latent_dim, preset=preset,
                                     seed=args.seed, **options)
        t0 = time.perf_counter()
        hasher.fit(images)
        latents[method] = hasher.latents(images)
        models[method] = hasher
        train_seconds = time.perf_counter() - t0
        last = {k: v for k, v in hasher.history_[-1].items() if k not in ("stage", "epoch")}
        print(f"{method} (preset {preset}): trained in {train_seconds:.1f}s (last epoch: "
              + ", ".join(f"{k} {v:.4g}" for k, v in last.items()) + ")")
        clusters[method] = score(method, "-", latents[method], train_seconds)
        if args.umap_dims and umap_missing is None:  # N2D's step, on every point
            t0 = time.perf_counter()
            points = cluster.embed(latents[method], "umap", args.umap_dims, args.seed, n_neighbors=20, min_dist=0.0)
            score(method, f"umap{args.umap_dims}", points, train_seconds + time.perf_counter() - t0, algorithm="gmm")
        elif args.umap_dims:
            print(f"  {method} umap{args.umap_dims}: skipped ({umap_missing})")

    # 2-D reductions of each latent space on a subset (t-SNE is quadratic-ish): the paper's comparison.
    names = {"vae": "VAE", "sparse-ae": "sparse AE", "ae": f"AE ({args.ae_preset})"}
    figures = []
    for method in methods:
        panels = []
        for reduction in reductions:
            t0 = time.perf_counter()
            try:
                points = cluster.embed(latents[method][:n_embed], reduction, 2, args.seed)
            except ImportError as err:
                print(f"  {reduction}: skipped ({err})")
                continue
            score(method, reduction, points, time.perf_counter() - t0)
            panels.append((f"{names[method]} latent, {reduction.upper() if reduction != 'tsne' else 't-SNE'}", points,
                           labels[:n_embed]))
        suffix = "" if method == "vae" else "_" + method.replace("-", "_")
        if not panels:
            continue
        figures.append(draw_scatter_panels(out / f"latent_by_class{suffix}.png", panels, dataset.class_names))
        if method == "vae":  # the clusters of the latent space, drawn where neighbourhoods are kept (t-SNE or UMAP)
            title, points, _ = next((p for p in panels if "PCA" not in p[0]), panels[0])
            figures.append(draw_scatter_panels(out / "latent_by_cluster.png",
                                               [(f"{title}, coloured by {args.algorithm} cluster of the latent space",
                                                 points, clusters["vae"][:n_embed])]))

    # Reconstructions (top: originals) and random samples of the VAE (the first model where there is no VAE).
    shown_method = "vae" if "vae" in methods else methods[0]
    hasher = models[shown_method]
    model = hasher._model()
    shown = images[rng.choice(len(images), min(10, len(images)), replace=False)]
    recon = vae.reconstruct(model, hasher.params_, shown)
    cell = lambda img, caption: GridCell(img, caption)  # noqa: E731
    rows = [(cell(a, "original"), [cell(b, "reconstructed")]) for a, b in zip(shown[:6], recon[:6])]
    if shown_method == "vae":  # only a VAE has a prior to sample from
        samples = vae.generate(model, hasher.params_, jax.random.fold_in(key, 1), 6)
        rows.append((cell(samples[0], "sample"), [cell(s, "sample") for s in samples[1:]]))
    figures.append(draw_result_grid(out / "reconstructions.png", rows))

    # The M most similar images: nearest latent means (Euclidean), the query itself left out.
    queries = rng.choice(len(images), min(6, len(images)), replace=False)
    dist, pos = euclidean_knn(latents[shown_method][queries], latents[shown_method], min(args.m + 1, len(images)))
    rows, same = [], []
    names = dataset.class_names
    for q, d_row, p_row in zip(queries, dist, pos):
        hits = [(d, p) for d, p in zip(d_row, p_row) if p != q][: args.m]
        same.extend(labels[p] == labels[q] for _, p in hits)
        rows.append((GridCell(images[q], "query", names[labels[q]]),
                     [GridCell(images[p], f"d={d:.2f}", names[labels[p]], bool(labels[p] == labels[q])) for d, p in hits]))
    figures.append(draw_result_grid(out / "nearest.png", rows))
    print(f"M = {args.m} most similar by {shown_method} latent distance: {np.mean(same):.3f} of them share the query's class")
    print("figures: " + ", ".join(str(f) for f in figures))
    if args.json:
        write_json(args.json, {"data": dataset.name, "images": len(images), "records": records,
                               "nearest_method": shown_method, "nearest_same_class": float(np.mean(same))})


if __name__ == "__main__":
    run_script(main)
