#!/usr/bin/env python
"""Chervyakov & Balan's experiment (two-stage Hamming network, 2008): classic and two-stage Hamming networks on noisy 15x15 Russian letters.

Prints, for a noisy "Й", its similarity to every prototype above the recognition threshold (the
seed: 95% to Й, 94.1% to И) and, for a pattern unlike any letter, that nothing passes the
threshold (the paper: 61.7% to Г at best); then recognition accuracy against the flip probability
p for both networks (1,000 trials per level), with the ties the classic network could not resolve.
Writes PNGs (prototypes, a noisy input, accuracy vs p) and, with --json, one record per level.

    python scripts/hamming_letters.py --json results/hamming_letters.json --out results/hamming_letters
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from jaxhash import hamming_net as hn
from jaxhash.data.letters import add_flip_noise, load_cyrillic_letters
from jaxhash.cli import _csv, _output_file, _positive, _seed, _unit_interval, run_script, write_json

IMAGE, PART = (15, 15), (5, 5)


def show_similarities(title, names, result, threshold):
    sim = np.asarray(result.similarity) * 100
    order = np.argsort(-sim, kind="stable")
    above = [f"{names[i]} {sim[i]:.1f}%" for i in order if sim[i] >= threshold * 100]
    print(f"{title}: best {names[order[0]]} {sim[order[0]]:.1f}%, above the {threshold:.0%} threshold: {', '.join(above) or 'none'}")


def decision(names, winner) -> str:
    winner = int(winner)
    return {hn.NOT_RECOGNISED: "not recognised", hn.TIE: "tie (unresolved)"}.get(winner, names[winner] if winner >= 0 else "?")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--noise", type=lambda text: [_unit_interval(v) for v in _csv(text)] or [_unit_interval(text)],
                        default="0,0.05,0.1,0.15,0.2,0.25,0.3,0.35,0.4", help="flip probabilities, from 0 to 1 (comma-separated)")
    parser.add_argument("--trials", type=_positive, default=1000, help="noisy letters per noise level")
    parser.add_argument("--threshold", type=_unit_interval, default=0.8, help="recognition threshold (the paper: 0.80-0.85)")
    parser.add_argument("--seed", type=_seed, default=0)
    parser.add_argument("--out", default="results/hamming_letters", help="folder for the PNG figures")
    parser.add_argument("--json", default=None, type=_output_file)
    args = parser.parse_args()

    names, images = load_cyrillic_letters()
    net = hn.make_hamming_net(images)
    rng = np.random.default_rng(args.seed)
    flat = images.reshape(len(names), -1)

    # 1. A noisy Й: similar to Й and И, both above the threshold; stage 2 decides.
    target = names.index("Й")
    noisy = add_flip_noise(rng, images[target], 0.05)
    classic = hn.classify(net, noisy.ravel())
    two = hn.two_stage_classify(net, noisy.ravel(), IMAGE, PART, args.threshold)
    show_similarities("noisy Й (p = 0.05)", names, classic, args.threshold)
    print(f"  classic network: {decision(names, classic.winner)}; two-stage: {decision(names, two.winner)} (stage {int(two.stage)})")

    # 2. A pattern that is no letter: a diagonal cross with a frame.
    cross = np.zeros(IMAGE, np.uint8)
    idx = np.arange(15)
    cross[idx, idx] = cross[idx, 14 - idx] = 1
    cross[[0, 14], :] = 1
    unrelated = [("a framed diagonal cross", cross), ("a random pattern (25% ink)", (rng.random(IMAGE) < 0.25).astype(np.uint8))]
    for label, pattern in unrelated:
        classic_u = hn.classify(net, pattern.ravel())
        two_u = hn.two_stage_classify(net, pattern.ravel(), IMAGE, PART, args.threshold)
        show_similarities(label, names, classic_u, args.threshold)
        print(f"  classic network: {decision(names, classic_u.winner)}; two-stage: {decision(names, two_u.winner)}")

    # 3. Accuracy against noise.
    records = []
    print(f"\n{'p':>5} {'classic':>8} {'ties':>5} {'two-stage':>10} {'not rec.':>9} {'ties':>5} {'classic ties solved':>20} {'tie-only 2-stage':>17}")
    for p in args.noise:
        truth = rng.integers(0, len(names), args.trials)
        inputs = add_flip_noise(rng, flat[truth], p)
        c = np.asarray(hn.classify_batch(net, inputs).winner)
        t = np.asarray(hn.two_stage_classify_batch(net, inputs, IMAGE, PART, args.threshold).winner)
        t_ties = np.asarray(hn.two_stage_classify_batch(net, inputs, IMAGE, PART, args.threshold, tie_only=True).winner)
        classic_ties = c == hn.TIE
        record = {
            "noise": p, "trials": args.trials, "threshold": args.threshold, "part": list(PART),
            "classic_accuracy": float(np.mean(c == truth)), "classic_ties": int(classic_ties.sum()),
            "two_stage_accuracy": float(np.mean(t == truth)), "two_stage_not_recognised": int(np.sum(t == hn.NOT_RECOGNISED)),
            "two_stage_ties": int(np.sum(t == hn.TIE)),
            "classic_ties_resolved_correctly_by_two_stage": int(np.sum(classic_ties & (t == truth))),
            "two_stage_tie_only_accuracy": float(np.mean(t_ties == truth)),
        }
        records.append(record)
        print(f"{p:>5.2f} {record['classic_accuracy']:>8.3f} {record['classic_ties']:>5} {record['two_stage_accuracy']:>10.3f} "
              f"{record['two_stage_not_recognised']:>9} {record['two_stage_ties']:>5} "
              f"{record['classic_ties_resolved_correctly_by_two_stage']:>14} of {record['classic_ties']:<3} {record['two_stage_tie_only_accuracy']:>13.3f}")

    if args.json:
        write_json(args.json, records)
    draw_figures(Path(args.out), names, images, noisy, records, args.threshold)


def draw_figures(out: Path, names, images, noisy, records, threshold):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed (pip install 'jaxhash[plots]'): no figures drawn")
        return
    out.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(3, 11, figsize=(11, 3.4))
    for ax, name, img in zip(axes.ravel(), names, images):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle("Prototypes: 33 Russian capital letters, 15x15")
    fig.tight_layout()
    fig.savefig(out / "prototypes.png", dpi=120)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(6, 2.4))
    for ax, (title, img) in zip(axes, [("noisy input", noisy), ("prototype Й", images[names.index("Й")]), ("prototype И", images[names.index("И")])]):
        ax.imshow(img, cmap="gray_r", vmin=0, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out / "noisy_input.png", dpi=120)
    plt.close(fig)

    p = [r["noise"] for r in records]
    fig, ax = plt.subplots(figsize=(5.5, 3.6))
    ax.plot(p, [r["classic_accuracy"] for r in records], "o-", label="classic (Hamming + Maxnet)")
    ax.plot(p, [r["two_stage_accuracy"] for r in records], "s-", label=f"two-stage (threshold {threshold:.0%})")
    ax.plot(p, [r["two_stage_tie_only_accuracy"] for r in records], "^--", label="two-stage, parts break ties only")
    ax.plot(p, [r["two_stage_not_recognised"] / r["trials"] for r in records], "x:", color="gray", label="two-stage: not recognised")
    ax2 = ax.twinx()
    ax2.bar(p, [r["classic_ties"] for r in records], width=0.015, alpha=0.3, color="red", label="classic ties")
    ax2.set_ylabel(f"classic ties per {records[0]['trials']:,}")
    ax.set_xlabel("pixel flip probability p")
    ax.set_ylabel("accuracy / fraction")
    ax.set_ylim(0, 1.02)
    ax.legend(loc="lower left", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "accuracy_vs_noise.png", dpi=120)
    plt.close(fig)
    print(f"\nwrote {out}/prototypes.png, noisy_input.png, accuracy_vs_noise.png")


if __name__ == "__main__":
    run_script(main)
