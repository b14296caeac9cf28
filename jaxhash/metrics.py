"""Retrieval metrics over Hamming rankings: mAP@R, precision@k, precision within radius r, PR curve.

Conventions (shared by every function here):

* The database is ranked for each query by Hamming distance; equal distances keep database order
  (smaller position first), the same order as :func:`jaxhash.search.knn_search`.
* A database item is relevant to a query when their labels are equal (1-D integer labels), or
  when they share at least one label (2-D multi-hot labels).
* Distances come from the jitted JAX kernel; the ranking itself uses NumPy's stable sort, which
  is a radix sort on small integers and far faster than XLA's CPU sort.
"""
from __future__ import annotations

import re
from typing import Iterator, NamedTuple

import jax.numpy as jnp
import numpy as np

from .checks import WORD_BITS, check_codes, check_k, check_labels, check_positive_int, check_radius, check_same_width
from .codes import pairwise_hamming

__all__ = [
    "mean_average_precision",
    "ranking_average_precision",
    "precision_at_k",
    "precision_within_radius",
    "precision_recall_curve",
    "PRCurve",
    "parse_metric",
    "evaluate",
]


def _prepare(query_codes, query_labels, database_codes, database_labels, n_bits: int | None = None):
    """Checked codes and labels; with ``n_bits`` the codes must be of that length (distances index 0..n_bits)."""
    if n_bits is not None:
        n_bits = check_positive_int(n_bits, "n_bits")
    q = check_codes(query_codes, n_bits=n_bits, name="query codes")
    db = check_codes(database_codes, n_bits=n_bits, name="database codes")
    check_same_width(q.shape[1], db.shape[1])
    if db.shape[0] == 0:
        raise ValueError("the database is empty: there is nothing to rank")
    ql = check_labels(query_labels, q.shape[0], "query labels")
    dl = check_labels(database_labels, db.shape[0], "database labels")
    if ql.ndim != dl.ndim:
        raise ValueError("query and database labels must both be class ids or both multi-hot")
    return q, ql, db, dl


def _relevance(query_labels, db_labels_ranked):
    """``(b,)``/(b, c) query labels, ``(b, r)``/(b, r, c) ranked db labels -> (b, r) bool."""
    if query_labels.ndim == 1:
        return db_labels_ranked == query_labels[:, None]
    return np.einsum("bc,brc->br", query_labels.astype(np.float32), db_labels_ranked.astype(np.float32)) > 0


def _distance_blocks(q, db, block: int) -> Iterator[tuple[int, np.ndarray]]:
    db_j = jnp.asarray(db)
    narrow = np.uint16 if db.shape[1] * WORD_BITS < 65536 else np.int32
    block = max(1, min(block, (1 << 26) // max(1, db.shape[0])))  # ~256 MiB of int32 at most
    for start in range(0, q.shape[0], block):
        dist = np.asarray(pairwise_hamming(jnp.asarray(q[start : start + block]), db_j))
        yield start, dist.astype(narrow)  # a narrow type sorts faster (radix sort)


def _ranked_relevance(q, ql, db, dl, top: int | None, block: int = 256):
    """Yield ``(start, relevance (b, top) bool)`` per query block, columns in ranking order."""
    for start, dist in _distance_blocks(q, db, block):
        order = np.argsort(dist, axis=1, kind="stable")
        if top is not None:
            order = order[:, :top]
        qlb = ql[start : start + dist.shape[0]]
        rel = _relevance(qlb, dl[order])
        yield start, rel


def _parse_top(top, n_db: int) -> int | None:
    if top is None or top == "all":
        return None
    return min(check_positive_int(top, "top (a positive integer or 'all')"), n_db)


def mean_average_precision(query_codes, query_labels, database_codes, database_labels, top=None) -> float:
    """Mean average precision over the top ``top`` results (``None`` or ``"all"``: whole ranking).

    For one query with relevance ``rel_i`` at rank ``i`` (1-based) among the first R results,
    ``AP = sum_i rel_i * P@i / sum_i rel_i``; a query with no relevant item in its top R scores 0.
    This is the definition used by the CNNH/DeepBit/HashNet evaluation code (mAP@R).

    Args:
      query_codes: ``(q, n_words)`` uint32; query_labels: ``(q,)`` ints or ``(q, c)`` multi-hot.
      database_codes: ``(n, n_words)`` uint32; database_labels: ``(n,)`` or ``(n, c)``.
    Returns:
      mAP as a Python float in [0, 1].
    """
    q, ql, db, dl = _prepare(query_codes, query_labels, database_codes, database_labels)
    top = _parse_top(top, db.shape[0])
    if q.shape[0] == 0:
        raise ValueError("no queries given")
    total = sum(_average_precision_sum(rel) for _, rel in _ranked_relevance(q, ql, db, dl, top))
    return total / q.shape[0]


def _average_precision_sum(rel: np.ndarray) -> float:
    """Sum over queries of AP for ``(b, R)`` bool relevance in ranking order (0 with no relevant item)."""
    hits = np.cumsum(rel, axis=1, dtype=np.float64)
    ranks = np.arange(1, rel.shape[1] + 1, dtype=np.float64)
    n_rel = hits[:, -1]
    ap_sum = np.sum(np.where(rel, hits / ranks, 0.0), axis=1)
    return float(np.sum(np.where(n_rel > 0, ap_sum / np.maximum(n_rel, 1), 0.0)))


def ranking_average_precision(rankings, query_labels, database_labels) -> float:
    """mAP@R of given rankings, e.g. a two-stage search's re-ranked lists (same definition as
    :func:`mean_average_precision` with ``top=R``).

    Args:
      rankings: ``(q, R)`` int database positions, best first (-1 = no result, never relevant).
      query_labels: ``(q,)`` or ``(q, c)``; database_labels: ``(n,)`` or ``(n, c)``.
    """
    rankings = np.asarray(rankings)
    if rankings.ndim != 2 or rankings.shape[0] == 0:
        raise ValueError(f"rankings must be (q, R) database positions with q >= 1, got shape {rankings.shape}")
    dl = check_labels(database_labels, len(database_labels), "database labels")
    ql = check_labels(query_labels, rankings.shape[0], "query labels")
    if rankings.max() >= len(dl):
        raise ValueError(f"ranking position {rankings.max()} is outside the {len(dl)} database labels")
    rel = _relevance(ql, dl[np.maximum(rankings, 0)]) & (rankings >= 0)
    return _average_precision_sum(rel) / rankings.shape[0]


def precision_at_k(query_codes, query_labels, database_codes, database_labels, k: int) -> float:
    """Mean over queries of the fraction of relevant items among the first ``k`` results."""
    q, ql, db, dl = _prepare(query_codes, query_labels, database_codes, database_labels)
    k = min(check_k(k), db.shape[0])
    total = 0.0
    for _, rel in _ranked_relevance(q, ql, db, dl, k):
        total += float(rel.sum()) / k
    return total / q.shape[0]


def _histograms(q, ql, db, dl, n_bits: int, block: int = 256):
    """Per-query counts of (all, relevant) database items at each distance 0..n_bits."""
    n_dist = n_bits + 1
    all_hist = np.zeros((q.shape[0], n_dist), np.int64)
    rel_hist = np.zeros((q.shape[0], n_dist), np.int64)
    for start, dist in _distance_blocks(q, db, block):
        b = dist.shape[0]
        offsets = (np.arange(b)[:, None] * n_dist + dist).ravel()
        all_hist[start : start + b] = np.bincount(offsets, minlength=b * n_dist).reshape(b, n_dist)
        rel = _relevance(ql[start : start + b], np.broadcast_to(dl, (b,) + dl.shape))
        rel_hist[start : start + b] = np.bincount(offsets, weights=rel.ravel(), minlength=b * n_dist).reshape(b, n_dist)
    return all_hist, rel_hist


def precision_within_radius(query_codes, query_labels, database_codes, database_labels, n_bits: int, radius: int = 2) -> float:
    """Mean precision of the items within Hamming distance ``radius`` (inclusive) of each query.

    A query with no database item inside the radius counts as precision 0 (the usual convention
    in hash-lookup evaluation: the lookup returned nothing useful).
    """
    q, ql, db, dl = _prepare(query_codes, query_labels, database_codes, database_labels, n_bits)
    radius = check_radius(radius, n_bits)
    all_hist, rel_hist = _histograms(q, ql, db, dl, n_bits)
    retrieved = all_hist[:, : radius + 1].sum(axis=1)
    relevant = rel_hist[:, : radius + 1].sum(axis=1)
    return float(np.mean(np.where(retrieved > 0, relevant / np.maximum(retrieved, 1), 0.0)))


class PRCurve(NamedTuple):
    """Precision and recall of Hamming-radius lookup, one point per radius ``0..n_bits``."""

    radius: np.ndarray  # (n_bits + 1,) int
    precision: np.ndarray  # (n_bits + 1,) float; nan where nothing at all is retrieved
    recall: np.ndarray  # (n_bits + 1,) float


def precision_recall_curve(query_codes, query_labels, database_codes, database_labels, n_bits: int) -> PRCurve:
    """Precision–recall curve of radius lookup, micro-averaged over queries.

    At radius r: precision = (relevant items within r, summed over queries) / (items within r,
    summed over queries); recall = the same numerator / (all relevant items, summed over queries).
    """
    q, ql, db, dl = _prepare(query_codes, query_labels, database_codes, database_labels, n_bits)
    all_hist, rel_hist = _histograms(q, ql, db, dl, n_bits)
    retrieved = np.cumsum(all_hist.sum(axis=0))
    relevant = np.cumsum(rel_hist.sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(retrieved > 0, relevant / np.maximum(retrieved, 1), np.nan)
    total_relevant = relevant[-1]
    recall = relevant / total_relevant if total_relevant else np.zeros_like(relevant, dtype=np.float64)
    return PRCurve(np.arange(n_bits + 1), precision, recall)


_METRIC_RE = re.compile(r"^(map|p|prec|pr)@(all|\d+)$")


def parse_metric(name: str) -> tuple[str, int | None]:
    """``"map@all"``, ``"map@5000"``, ``"p@100"`` (precision@k), ``"pr@2"`` (precision within radius 2)."""
    m = _METRIC_RE.match(name.strip().lower())
    if not m or (m.group(1) != "map" and m.group(2) == "all"):
        raise ValueError(f"unknown metric {name!r}; use map@all, map@R, p@K or pr@RADIUS (e.g. map@5000, p@100, pr@2)")
    kind = {"prec": "p"}.get(m.group(1), m.group(1))
    value = None if m.group(2) == "all" else int(m.group(2))
    if value == 0 and kind != "pr":
        raise ValueError(f"metric {name!r} looks at the top 0 results: use {kind}@1 or more (radius 0 is pr@0)")
    return kind, value


def evaluate(name: str, query_codes, query_labels, database_codes, database_labels, n_bits: int) -> float:
    """Compute a metric given by name (see :func:`parse_metric`)."""
    kind, value = parse_metric(name)
    if kind == "map":
        return mean_average_precision(query_codes, query_labels, database_codes, database_labels, top=value)
    if kind == "p":
        return precision_at_k(query_codes, query_labels, database_codes, database_labels, k=value)
    return precision_within_radius(query_codes, query_labels, database_codes, database_labels, n_bits=n_bits, radius=value)
