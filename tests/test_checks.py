import math

import numpy as np
import pytest

from jaxhash import checks


@pytest.mark.parametrize("bad", [0, -3, None, math.nan, math.inf, 1.5, True, "7", np.float64("nan")])
def test_positive_int_refuses_what_is_not_one(bad):
    with pytest.raises((ValueError, TypeError), match="k must be"):
        checks.check_k(bad)


def test_positive_int_accepts_integral_values_of_any_type():
    assert checks.check_positive_int(np.int64(5), "n") == 5
    assert checks.check_positive_int(16.0, "n") == 16
    assert type(checks.check_n_bits(np.uint8(64))) is int


def test_radius_bounds():
    assert checks.check_radius(0) == 0 and checks.check_radius(3, n_bits=8) == 3
    with pytest.raises(ValueError, match="at most n_bits=8"):
        checks.check_radius(9, n_bits=8)
    with pytest.raises(ValueError, match="non-negative"):
        checks.check_radius(-1)
    with pytest.raises(TypeError, match="radius must be an integer"):
        checks.check_radius(None)


def test_n_words_for():
    assert [checks.n_words_for(b) for b in (1, 32, 33, 64, 65)] == [1, 1, 2, 2, 3]
    with pytest.raises(ValueError, match="n_bits must be a positive integer"):
        checks.n_words_for(0)
    with pytest.raises(ValueError, match="n_bits must be an integer"):
        checks.n_words_for(16.5)


def test_check_codes_explains_bad_input():
    good = np.zeros((2, 2), np.uint32)
    assert checks.check_codes(good, n_bits=64).shape == (2, 2)
    with pytest.raises(TypeError, match="pack_bits"):
        checks.check_codes(np.zeros((2, 64), np.uint8))
    with pytest.raises(ValueError, match="need 1 word: "):
        checks.check_codes(good, n_bits=32)
    with pytest.raises(ValueError, match="2-D"):
        checks.check_codes(np.zeros(2, np.uint32), n_bits=64)
    with pytest.raises(ValueError, match="beyond n_bits"):
        checks.check_codes(np.full((1, 1), 1 << 20, np.uint32), n_bits=16)
    faiss_bytes = np.arange(16, dtype=np.uint8).reshape(2, 8)  # two 64-bit codes as FAISS stores them
    with pytest.raises(TypeError, match=r"like FAISS's binary codes: np.ascontiguousarray\(codes\).view\('<u4'\)"):
        checks.check_codes(faiss_bytes)
    assert checks.check_codes(np.ascontiguousarray(faiss_bytes).view("<u4")).shape == (2, 2)


def test_same_width_features_and_labels():
    checks.check_same_width(2, 2)
    with pytest.raises(ValueError, match="same code length"):
        checks.check_same_width(1, 2)
    assert checks.check_features([[1, 2]], "x").dtype == np.float32
    with pytest.raises(ValueError, match="1 rows contain NaN"):
        checks.check_features([[1.0, np.nan], [0.0, 1.0]], "x")
    with pytest.raises(ValueError, match="2-D"):
        checks.check_features(np.zeros(3), "x")
    with pytest.raises(TypeError, match="numeric"):
        checks.check_features(np.array([["a"]]), "x")
    with pytest.raises(ValueError, match="n=3"):
        checks.check_labels(np.zeros(2), 3, "labels")
    with pytest.raises(ValueError, match="labels hold 1 NaN or infinite values: a NaN label matches no other"):
        checks.check_labels([0.0, np.nan], 2, "labels")
    assert list(checks.check_labels(["cat", "dog"], 2, "labels")) == ["cat", "dog"]  # names are labels too


def test_core_modules_validate_through_checks():
    """One wording everywhere: search, metrics and the index reject a bad k the same way."""
    import jaxhash

    codes = np.zeros((4, 1), np.uint32)
    labels = np.arange(4)
    index = jaxhash.HashIndex(32)
    index.add(codes)
    for call in (lambda: jaxhash.knn_search(codes, codes, 1.5), lambda: index.search(codes, 1.5),
                 lambda: jaxhash.precision_at_k(codes, labels, codes, labels, 1.5)):
        with pytest.raises(ValueError, match="k must be an integer, got 1.5"):
            call()
