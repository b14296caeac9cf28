#!/usr/bin/env python
"""One epoch of CD-1 on Fashion-MNIST: jaxhash's jit-compiled lax.scan vs scikit-learn's BernoulliRBM.

60,000 x 784 pixels in [0, 1], 256 hidden units, mini-batches of 100, learning rate 0.05, no
momentum or weight decay for either (scikit-learn has neither). Both are warmed up, then timed
interleaved; medians of ``--repeats``. The last line is the ratio sklearn time / jaxhash time.
After ``--quality-epochs`` epochs both report the mean-field reconstruction error on the data,
computed the same way, so the speed is not bought with wrong arithmetic. (scikit-learn's
BernoulliRBM updates with persistent chains; jaxhash runs plain CD-1 here.)

    python scripts/bench_rbm.py --json results/bench_rbm.json
"""
from __future__ import annotations

import argparse
import os
import statistics
import time

from jaxhash.cli import _output_file, write_json


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default="fashion-mnist")
    parser.add_argument("--data-dir", default=None)
    parser.add_argument("--n", type=int, default=None, help="use only the first N training images")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=100)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quality-epochs", type=int, default=5)
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    from sklearn.neural_network import BernoulliRBM

    from jaxhash import rbm
    from jaxhash.data import load_dataset, to_features

    x = to_features(load_dataset(args.data, data_dir=args.data_dir).x_train)
    if args.n:
        x = x[: args.n]
    n, d = x.shape
    print(f"{args.data}: {n} x {d}, {args.hidden} hidden, batch {args.batch}, lr {args.lr}; jax {jax.__version__} on "
          f"{jax.default_backend()}, {os.cpu_count()} cpus")
    x_j = jnp.asarray(rbm.check_rbm_data(x))
    opt = rbm.rbm_optimizer(args.lr, momentum=0.0)

    def jax_epochs(epochs, seed=0):
        key = jax.random.key(seed)
        key, k0 = jax.random.split(key)
        state = rbm.init_train_state(k0, rbm.init_rbm(k0, d, args.hidden), opt)
        for _ in range(epochs):
            key, ke = jax.random.split(key)
            state, err = rbm.train_epoch(ke, state, x_j, opt, batch_size=args.batch, k=1)
        jax.block_until_ready(state.params)
        return state.params

    def sk_epochs(epochs, seed=0):
        model = BernoulliRBM(n_components=args.hidden, learning_rate=args.lr, batch_size=args.batch, n_iter=epochs, random_state=seed)
        return model.fit(x)

    jax_epochs(1)  # compile
    sk_epochs(1)
    t_jax, t_sk = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        jax_epochs(1, seed=r)
        t_jax.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        sk_epochs(1, seed=r)
        t_sk.append(time.perf_counter() - t0)
    mj, ms = statistics.median(t_jax), statistics.median(t_sk)
    gflop = 5 * 2 * n * d * args.hidden / 1e9  # five (batch x 784 x 256) matmuls per update

    params = jax_epochs(args.quality_epochs)
    err_jax = float(rbm.reconstruction_error(params, x_j))
    sk = sk_epochs(args.quality_epochs)
    sk_params = rbm.RBMParams(jnp.asarray(sk.components_.T, jnp.float32), jnp.asarray(sk.intercept_visible_, jnp.float32),
                              jnp.asarray(sk.intercept_hidden_, jnp.float32))
    err_sk = float(rbm.reconstruction_error(sk_params, x_j))
    record = {"data": args.data, "n": n, "hidden": args.hidden, "batch": args.batch, "lr": args.lr,
              "jaxhash_epoch_seconds": round(mj, 3), "sklearn_epoch_seconds": round(ms, 3),
              "jaxhash_gflops": round(gflop / mj, 1), "quality_epochs": args.quality_epochs,
              "jaxhash_reconstruction_error": round(err_jax, 5), "sklearn_reconstruction_error": round(err_sk, 5),
              "ratio_sklearn_over_jaxhash": round(ms / mj, 2)}
    print(f"one epoch: jaxhash {mj:.2f}s ({gflop / mj:.0f} GFLOP/s), sklearn {ms:.2f}s (medians of {args.repeats})")
    print(f"reconstruction error (mean squared, per pixel) after {args.quality_epochs} epochs: jaxhash {err_jax:.4f}, sklearn {err_sk:.4f}")
    if args.json:
        write_json(args.json, record)
    print(f"ratio sklearn/jaxhash: {ms / mj:.2f}")


if __name__ == "__main__":
    main()
