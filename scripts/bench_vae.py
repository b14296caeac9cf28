#!/usr/bin/env python
"""Training speed of Kovalenko's convolutional VAE at the seed's scale: images per second.

Kovalenko's "Clustering images by visual similarity with variational autoencoders" trained on 256x256
colour images, about 5 hours per epoch of 154,644 images on a GTX 1080 Ti. This times jaxhash's jitted
training step (forward, backward and Adam update) of the same model kind on whatever device JAX runs
on: random uint8 images (the step's cost does not depend on their content), ``--warmup`` steps to
compile, then the median of ``--repeats`` runs of ``--steps`` steps. It prints images per second and
the hours one epoch of the seed's 154,644 images would take at that rate.

    python scripts/bench_vae.py                                        # 256x256x3, preset gpu
    python scripts/bench_vae.py --size 28 --channels 1 --preset cpu    # the MNIST model
    python scripts/bench_vae.py --json results/bench_vae.json
"""
from __future__ import annotations

import argparse
import statistics
import time

from jaxhash.cli import _output_file, _positive, write_json

SEED_IMAGES = 154_644  # the seed's training set


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=_positive, default=256, help="image side in pixels (default: %(default)s)")
    parser.add_argument("--channels", type=int, choices=(1, 3), default=3, help="1 (grey) or 3 (colour) (default: 3)")
    parser.add_argument("--model", choices=("vae", "sparse-ae"), default="vae", help="(default: %(default)s)")
    parser.add_argument("--preset", default="gpu", help="tiny, cpu or gpu (default: %(default)s, the seed's scale)")
    parser.add_argument("--batch-size", type=_positive, default=None, help="override the preset's batch size")
    parser.add_argument("--steps", type=_positive, default=10, help="training steps per timed run (default: %(default)s)")
    parser.add_argument("--repeats", type=_positive, default=3, help="timed runs; the median is printed (default: %(default)s)")
    parser.add_argument("--warmup", type=_positive, default=2, help="untimed steps first, to compile (default: %(default)s)")
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()

    from jaxhash import vae

    if args.preset not in vae.PRESETS or args.preset == "n2d":
        parser.error(f"--preset takes tiny, cpu or gpu (the convolutional presets), not {args.preset!r}")

    import jax
    import numpy as np
    import optax

    config = vae.PRESETS[args.preset]
    if args.batch_size is not None:
        config = config._replace(batch_size=args.batch_size)
    shape = (args.size, args.size, args.channels)
    try:
        model = vae.make_model(args.model, config, shape)
    except ValueError as err:
        parser.error(str(err))
    params = vae.init_params(model, jax.random.key(0))
    optimizer = optax.adam(config.learning_rate)
    state = vae.AEState(params, optimizer.init(params))
    step = vae.make_train_step(model, optimizer)
    batch = jax.device_put(np.random.default_rng(0).integers(0, 256, (config.batch_size, *shape), dtype=np.uint8))
    n_params = sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))
    device = jax.devices()[0]
    print(f"{args.model} of {args.size}x{args.size}x{args.channels} images, preset {args.preset} (latent {config.latent_dim}, "
          f"width {config.width}-{config.max_width}, {n_params:,} parameters), batch {config.batch_size}, on "
          f"{device.platform} ({device.device_kind})", flush=True)

    keys = iter(jax.random.split(jax.random.key(1), args.warmup + args.steps * args.repeats))
    for _ in range(args.warmup):
        state, terms = step(state, batch, next(keys))
    jax.block_until_ready(terms)
    seconds = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        for _ in range(args.steps):
            state, terms = step(state, batch, next(keys))
        jax.block_until_ready(terms)
        seconds.append(time.perf_counter() - t0)
    if not np.isfinite(float(terms["loss"])):
        raise SystemExit("the loss became NaN while timing: the figures would not describe a working step")
    images_per_second = args.steps * config.batch_size / statistics.median(seconds)
    hours = SEED_IMAGES / images_per_second / 3600
    print(f"{images_per_second:,.1f} images/s (median of {args.repeats} runs of {args.steps} steps); one epoch of the "
          f"seed's {SEED_IMAGES:,} images: {hours:.2f} h (the seed: about 5 h on a GTX 1080 Ti)")
    if args.json:
        write_json(args.json, {"model": args.model, "shape": list(shape), "preset": args.preset,
                               "batch_size": config.batch_size, "parameters": n_params, "platform": device.platform,
                               "device": device.device_kind, "images_per_second": round(images_per_second, 2),
                               "hours_per_seed_epoch": round(hours, 3), "run_seconds": [round(s, 4) for s in seconds]})


if __name__ == "__main__":
    main()
