import numpy as np
import pytest

from jaxhash import mean_average_precision, pack_bits, precision_at_k, precision_recall_curve, precision_within_radius
from jaxhash.metrics import evaluate, parse_metric

from conftest import oracle_knn, random_codes


def codes_at_distances(distances, n_bits=8):
    """Query code 0 and database codes whose distance to it is given (low bits set)."""
    bits = np.zeros((len(distances), n_bits), bool)
    for i, d in enumerate(distances):
        bits[i, :d] = True
    return np.asarray(pack_bits(np.zeros((1, n_bits), bool))), np.asarray(pack_bits(bits))


def test_map_hand_computed():
    q, db = codes_at_distances([0, 1, 2, 3])
    rel = np.array([1, 0, 1, 0])
    # Relevant at ranks 1 and 3: AP = (1/1 + 2/3) / 2.
    assert mean_average_precision(q, [1], db, rel) == pytest.approx((1 + 2 / 3) / 2)
    assert mean_average_precision(q, [1], db, rel, top=2) == pytest.approx(1.0)
    assert mean_average_precision(q, [1], db, rel, top="all") == pytest.approx((1 + 2 / 3) / 2)


def test_map_ties_keep_database_order():
    q, db = codes_at_distances([2, 2, 2])
    # All tied: ranking is database order, relevant only at rank 3 -> AP = 1/3.
    assert mean_average_precision(q, [5], db, np.array([0, 0, 5])) == pytest.approx(1 / 3)


def test_query_without_relevant_items_scores_zero():
    q, db = codes_at_distances([0, 1])
    two_queries = np.concatenate([q, q])
    assert mean_average_precision(two_queries, [1, 7], db, np.array([1, 1])) == pytest.approx(0.5)


def test_precision_at_k():
    q, db = codes_at_distances([0, 1, 2, 3])
    assert precision_at_k(q, [1], db, np.array([1, 0, 1, 0]), k=3) == pytest.approx(2 / 3)


def test_precision_within_radius_and_empty_queries():
    q, db = codes_at_distances([0, 1, 2, 5])
    rel = np.array([1, 0, 1, 1])
    assert precision_within_radius(q, [1], db, rel, n_bits=8, radius=1) == pytest.approx(0.5)
    assert precision_within_radius(q, [1], db, rel, n_bits=8, radius=2) == pytest.approx(2 / 3)
    far_query = np.asarray(pack_bits(np.ones((1, 8), bool)))  # distances 8, 7, 6, 3: nothing within 2
    both = np.concatenate([q, far_query])
    assert precision_within_radius(both, [1, 1], db, rel, n_bits=8, radius=2) == pytest.approx((2 / 3 + 0) / 2)


def test_pr_curve_hand_computed():
    q, db = codes_at_distances([0, 1, 2, 5])
    curve = precision_recall_curve(q, [1], db, np.array([1, 0, 1, 1]), n_bits=8)
    assert curve.precision[:3].tolist() == pytest.approx([1.0, 0.5, 2 / 3])
    assert curve.recall[[0, 2, 5, 8]].tolist() == pytest.approx([1 / 3, 2 / 3, 1.0, 1.0])


def test_multi_label_relevance_shares_any_label():
    q, db = codes_at_distances([0, 1, 2])
    ql = np.array([[1, 0, 1]])
    dl = np.array([[0, 0, 1], [0, 1, 0], [1, 1, 0]])
    assert mean_average_precision(q, ql, db, dl) == pytest.approx((1 + 2 / 3) / 2)


def test_parse_and_evaluate():
    assert parse_metric("mAP@all") == ("map", None)
    assert parse_metric("map@5000") == ("map", 5000)
    assert parse_metric("p@10") == ("p", 10)
    assert parse_metric("pr@2") == ("pr", 2)
    with pytest.raises(ValueError, match="unknown metric"):
        parse_metric("ndcg@10")
    assert parse_metric("pr@0") == ("pr", 0)  # exact matches
    for zero in ("p@0", "map@0"):
        with pytest.raises(ValueError, match=f"metric '{zero}' looks at the top 0 results"):
            parse_metric(zero)
    q, db = codes_at_distances([0, 1, 2, 3])
    assert evaluate("p@2", q, [1], db, np.array([1, 0, 1, 0]), n_bits=8) == pytest.approx(0.5)


def test_bad_labels_and_codes():
    q, db = codes_at_distances([0, 1])
    with pytest.raises(ValueError, match="database labels"):
        mean_average_precision(q, [1], db, np.array([1, 0, 1]))
    with pytest.raises(ValueError, match="top"):
        mean_average_precision(q, [1], db, np.array([1, 0]), top=0)
    with pytest.raises(ValueError, match="empty"):
        mean_average_precision(q, [1], db[:0], np.array([], int))


def test_distances_beyond_16_bits_are_exact(rng):
    n_bits = 70_000
    bits = np.zeros((3, n_bits), bool)
    bits[1, :66_000] = True  # distance 66,000 from code 0
    bits[2, :60_000] = True  # distance 60,000
    codes = np.asarray(pack_bits(bits))
    curve = precision_recall_curve(codes[:1], [0], codes[1:], [0, 1], n_bits=n_bits)
    assert curve.precision[60_000] == 0.0 and curve.recall[65_999] == 0.0 and curve.recall[66_000] == 1.0
    assert precision_at_k(codes[:1], [0], codes[1:], [1, 0], k=1) == 1.0  # the nearer one (60,000) comes first


def test_ranking_average_precision_equals_map_of_the_hamming_ranking(rng):
    from jaxhash.metrics import ranking_average_precision

    db, db_bits = random_codes(rng, 300, 32)
    q, q_bits = random_codes(rng, 20, 32)
    dl, ql = rng.integers(0, 4, 300), rng.integers(0, 4, 20)
    _, order = oracle_knn(q_bits, db_bits, 50)
    assert ranking_average_precision(order, ql, dl) == pytest.approx(mean_average_precision(q, ql, db, dl, top=50))
    assert ranking_average_precision(np.full((1, 3), -1), ql[:1], dl) == 0.0  # no results: nothing relevant
    with pytest.raises(ValueError, match="outside the 300 database labels"):
        ranking_average_precision(np.full((1, 3), 300), ql[:1], dl)


def test_radius_metrics_check_the_code_length_they_are_given():
    q, db = codes_at_distances([0, 3, 9, 16], n_bits=16)
    labels = np.array([0, 0, 1, 1])
    with pytest.raises(ValueError, match="bits set beyond n_bits=8"):
        precision_within_radius(q, [0], db, labels, n_bits=8)
    with pytest.raises(ValueError, match="have 1 word .* but 64-bit codes need 2 words"):
        precision_recall_curve(q, [0], db, labels, n_bits=64)
    assert len(precision_recall_curve(q, [0], db, labels, n_bits=16).radius) == 17
