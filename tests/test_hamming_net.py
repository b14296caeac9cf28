import jax
import numpy as np
import pytest

from jaxhash import hamming_net as hn
from jaxhash import pack_bits
from jaxhash.data.letters import add_flip_noise, load_cyrillic_letters


@pytest.fixture(scope="module")
def letters():
    names, images = load_cyrillic_letters()
    return names, images, hn.make_hamming_net(images)


def test_letters_data(letters):
    names, images, _ = letters
    assert len(names) == 33 and images.shape == (33, 15, 15) and set(np.unique(images)) == {0, 1}
    assert len({img.tobytes() for img in images}) == 33
    diff = images[names.index("Й")] != images[names.index("И")]
    assert diff.any() and not diff[3:].any()  # they differ only in the breve above the letter


def test_lower_layer_is_m_minus_hamming_distance(rng):
    protos = rng.integers(0, 2, (7, 40))
    net = hn.make_hamming_net(protos)
    for x in rng.integers(0, 2, (5, 40)):
        u = np.asarray(hn.hamming_layer(net, hn.to_bipolar(x)))
        np.testing.assert_array_equal(u, 40 - (protos != x).sum(axis=1))  # seed formula (1), exactly
        np.testing.assert_allclose(np.asarray(hn.similarity(net, hn.to_bipolar(x))), u / 40, rtol=1e-6)


def test_activation_is_piecewise_linear():
    out = np.asarray(hn.activation(np.array([-3.0, 0.0, 2.0, 10.0, 12.0]), 0.1, 10.0))
    np.testing.assert_allclose(out, [0.0, 0.0, 0.2, 1.0, 10.0])


def test_maxnet_unique_maximum_leaves_one_winner():
    result = hn.maxnet(np.array([0.5, 0.93, 0.92, 0.1, 0.0], np.float32))
    assert int(result.winner) == 1
    act = np.asarray(result.activations)
    assert act[1] > 0 and np.count_nonzero(act) == 1


def test_maxnet_reports_ties():
    assert int(hn.maxnet(np.array([0.7, 0.9, 0.9, 0.2], np.float32)).winner) == hn.TIE
    assert int(hn.maxnet(np.zeros(3, np.float32)).winner) == hn.TIE
    assert int(hn.maxnet(np.array([0.0, 0.4, 0.0], np.float32)).winner) == 1


def constructed_tie():
    """x differs from A in 2 pixels inside one 3x3 part, from B in 2 pixels in two parts."""
    rng = np.random.default_rng(7)
    a = rng.integers(0, 2, (6, 6)).astype(np.uint8)
    x = a.copy()
    x[0, 0] ^= 1
    x[1, 1] ^= 1  # both in the top-left part: a concentrated, structural difference
    b = x.copy()
    b[4, 1] ^= 1  # bottom-left part
    b[1, 4] ^= 1  # top-right part: scattered, noise-like differences
    return np.stack([a, b]), x


def test_two_stage_resolves_a_tie_the_classic_network_cannot():
    protos, x = constructed_tie()
    net = hn.make_hamming_net(protos)
    classic = hn.classify(net, x.ravel())
    assert int(classic.winner) == hn.TIE
    np.testing.assert_allclose(np.asarray(classic.similarity), [34 / 36, 34 / 36])
    two = hn.two_stage_classify(net, x.ravel(), (6, 6), (3, 3), threshold=0.8)
    assert int(two.winner) == 1 and int(two.stage) == 2
    assert int(hn.two_stage_classify(net, x.ravel(), (6, 6), (3, 3), threshold=0.8, tie_only=True).winner) == 1


def test_noisy_letter_and_unrelated_pattern(letters):
    names, images, net = letters
    rng = np.random.default_rng(0)
    noisy = add_flip_noise(rng, images[names.index("Й")], 0.05)
    result = hn.two_stage_classify(net, noisy.ravel(), (15, 15), (5, 5), threshold=0.8)
    above = {names[i] for i in np.flatnonzero(np.asarray(result.candidates))}
    assert {"Й", "И"} <= above and names[int(result.winner)] == "Й" and int(result.stage) == 2
    cross = np.zeros((15, 15), np.uint8)
    cross[np.arange(15), np.arange(15)] = cross[np.arange(15), 14 - np.arange(15)] = 1
    unrelated = hn.two_stage_classify(net, cross.ravel(), (15, 15), (5, 5), threshold=0.8)
    assert int(unrelated.winner) == hn.NOT_RECOGNISED
    assert np.asarray(unrelated.similarity).max() < 0.8
    assert int(hn.classify(net, cross.ravel()).winner) >= 0  # the classic network always answers


def test_batched_equals_one_at_a_time(letters):
    names, images, net = letters
    rng = np.random.default_rng(1)
    truth = rng.integers(0, 33, 40)
    inputs = add_flip_noise(rng, images[truth], 0.2).reshape(40, -1)
    protos, x = constructed_tie()
    batch_c = hn.classify_batch(net, inputs)
    batch_t = hn.two_stage_classify_batch(net, inputs, (15, 15), (5, 5), 0.8)
    for i in range(40):
        one_c = hn.classify(net, inputs[i])
        one_t = hn.two_stage_classify(net, inputs[i], (15, 15), (5, 5), 0.8)
        assert int(batch_c.winner[i]) == int(one_c.winner)
        assert int(batch_t.winner[i]) == int(one_t.winner) and int(batch_t.stage[i]) == int(one_t.stage)
        np.testing.assert_allclose(np.asarray(batch_t.part_scores[i]), np.asarray(one_t.part_scores), rtol=1e-6)
    tie_net = hn.make_hamming_net(protos)
    assert int(hn.two_stage_classify_batch(tie_net, x[None], (6, 6), (3, 3), 0.8).winner[0]) == 1


def test_bad_input(letters):
    _, images, net = letters
    with pytest.raises(ValueError, match="different sizes"):
        hn.make_hamming_net([np.zeros((3, 3)), np.zeros((4, 4))])
    with pytest.raises(ValueError, match="non-empty"):
        hn.make_hamming_net(np.zeros((0, 9)))
    with pytest.raises(ValueError, match="values 0 and 1"):
        hn.make_hamming_net(np.full((2, 4), 0.5))
    with pytest.raises(ValueError, match="values 0 and 1"):
        hn.classify_batch(net, np.full((1, 225), 2))
    with pytest.raises(ValueError, match="225"):
        hn.classify_batch(net, np.zeros((1, 100), np.uint8))
    with pytest.raises(ValueError, match="must divide"):
        hn.two_stage_classify_batch(net, images[:1], (15, 15), (4, 5))
    with pytest.raises(ValueError, match="has 100 pixels"):
        hn.two_stage_classify(net, images[0].ravel(), (10, 10), (5, 5))


def test_classifier_over_packed_codes(rng):
    centres = rng.integers(0, 2, (4, 48)).astype(bool)
    labels = np.repeat(np.arange(4), 30)
    bits = centres[labels] ^ (rng.random((120, 48)) < 0.1)
    codes = np.asarray(pack_bits(bits))
    classes, protos = hn.majority_prototypes(codes, labels * 10, 48)
    assert classes.tolist() == [0, 10, 20, 30] and protos.shape == (4, 2)
    np.testing.assert_array_equal(np.asarray(pack_bits(centres)), protos)  # majority recovers the centres
    winner, tie = hn.classify_codes(protos, codes, 48)
    assert (classes[winner] == labels * 10).mean() > 0.95
    same = np.asarray(pack_bits(np.stack([centres[0], centres[0]])))
    w, t = hn.classify_codes(same, same[:1], 48)
    assert t.tolist() == [True] and w.tolist() == [0]


def test_maxnet_is_jittable_and_vmappable():
    batch = np.array([[0.1, 0.5, 0.3], [0.9, 0.2, 0.9]], np.float32)
    winners = jax.vmap(hn.maxnet)(batch).winner
    assert np.asarray(winners).tolist() == [1, hn.TIE]
