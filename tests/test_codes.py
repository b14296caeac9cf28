import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxhash import binarize, hamming_distance, pack_bits, pairwise_hamming, unpack_bits
from jaxhash.codes import n_words_for


@pytest.mark.parametrize("n_bits", [1, 7, 31, 32, 33, 48, 64, 100, 128, 256])
def test_pack_unpack_round_trip(rng, n_bits):
    bits = rng.integers(0, 2, size=(13, n_bits)).astype(np.uint8)
    codes = pack_bits(bits)
    assert codes.dtype == jnp.uint32 and codes.shape == (13, n_words_for(n_bits))
    np.testing.assert_array_equal(np.asarray(unpack_bits(codes, n_bits)), bits)


@pytest.mark.parametrize("n_bits", [1, 7, 31, 32, 33, 64, 100, 256])
def test_host_packing_gives_the_same_words(rng, n_bits):
    from jaxhash.codes import pack_bits_host

    for rows in (0, 1, 9):
        bits = rng.integers(0, 2, size=(rows, n_bits)).astype(bool)
        host = pack_bits_host(bits)
        assert host.dtype == np.uint32 and host.shape == (rows, n_words_for(n_bits))
        np.testing.assert_array_equal(host, np.asarray(pack_bits(bits)))
    with pytest.raises(ValueError, match="n_bits"):
        pack_bits_host(np.zeros(5, bool))


def test_bit_order_is_little_endian_within_words():
    bits = np.zeros((1, 40), bool)
    bits[0, 0] = bits[0, 33] = True
    codes = np.asarray(pack_bits(bits))
    assert codes.tolist() == [[1, 2]]
    # Viewed as bytes this is FAISS's layout: bit j in byte j // 8 at position j % 8.
    np.testing.assert_array_equal(codes.view(np.uint8)[0, :5], np.packbits(bits[0], bitorder="little"))


def test_unused_high_bits_are_zero(rng):
    codes = np.asarray(pack_bits(np.ones((3, 33), bool)))
    assert codes[:, 1].tolist() == [1, 1, 1]


def test_pack_bits_is_jittable(rng):
    bits = rng.integers(0, 2, size=(5, 70)).astype(bool)
    np.testing.assert_array_equal(jax.jit(pack_bits)(bits), pack_bits(bits))


def test_hamming_distance_matches_popcount_oracle(rng):
    a, b = rng.integers(0, 2, size=(2, 100)).astype(bool)
    ca, cb = np.asarray(pack_bits(np.stack([a, b])))
    assert int(hamming_distance(ca, cb)) == int((a != b).sum())


def test_pairwise_hamming_matches_brute_force(rng):
    q = rng.integers(0, 2, size=(7, 65)).astype(bool)
    d = rng.integers(0, 2, size=(11, 65)).astype(bool)
    got = np.asarray(pairwise_hamming(pack_bits(q), pack_bits(d)))
    assert got.dtype == np.int32
    np.testing.assert_array_equal(got, (q[:, None] != d[None]).sum(-1))


def test_binarize_sign_and_threshold():
    x = jnp.array([[-1.0, 0.0, 0.3, 0.7]])
    assert np.asarray(binarize(x)).tolist() == [[False, False, True, True]]
    assert np.asarray(binarize(x, "threshold", 0.5)).tolist() == [[False, False, False, True]]
    with pytest.raises(ValueError, match="unknown binarize"):
        binarize(x, "median")


def test_codes_reexports_the_checks():
    from jaxhash import checks, codes

    assert codes.check_codes is checks.check_codes and codes.n_words_for is checks.n_words_for


def test_distances_refuse_codes_of_two_widths_or_not_packed_words():
    one_word, two_words = np.zeros((3, 1), np.uint32), np.zeros((3, 2), np.uint32)
    with pytest.raises(ValueError, match="codes of 1 and 2 words cannot be compared"):
        pairwise_hamming(one_word, two_words)  # XOR would broadcast them into distances
    with pytest.raises(ValueError, match="codes of 1 and 2 words cannot be compared"):
        hamming_distance(one_word[0], two_words[0])
    with pytest.raises(TypeError, match="packed uint32 words, got dtype int64"):
        pairwise_hamming(one_word.astype(np.int64), one_word)
    with pytest.raises(ValueError, match=r"must be \(n, n_words\) packed words, got shape \(1,\)"):
        pairwise_hamming(one_word[0], one_word)
    np.testing.assert_array_equal(pairwise_hamming(np.array([[1], [3]], np.uint32), np.array([[0], [7]], np.uint32)),
                                  [[1, 2], [2, 1]])
