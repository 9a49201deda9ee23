"""Fixed-point words and the information buffer, against Python integer arithmetic."""

import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxrnn.exact import buffer
from jaxrnn.exact import fixed_point as fp

EDGES = [0, 1, -1, 2**16 - 1, -(2**16), 2**32 - 1, 2**32, -(2**32), 2**63 - 1, -(2**63)]


def words(values):
    values = [int(v) % 2**64 for v in values]
    return fp.Word(
        jnp.array([v >> 32 for v in values], jnp.uint32),
        jnp.array([v & 0xFFFFFFFF for v in values], jnp.uint32),
    )


def signed(v):
    v %= 2**64
    return v - 2**64 if v >= 2**63 else v


def random_ints(seed, size, low=-(2**63), high=2**63):
    rng = np.random.default_rng(seed)
    return [int(v) for v in rng.integers(low, high, size, dtype=np.int64)] + EDGES


def test_add_sub_neg_match_integers_mod_2_64():
    a, b = random_ints(0, 500), random_ints(1, 500)
    wa, wb = words(a), words(b)
    assert list(fp.to_int(fp.add(wa, wb))) == [signed(x + y) for x, y in zip(a, b, strict=True)]
    assert list(fp.to_int(fp.sub(wa, wb))) == [signed(x - y) for x, y in zip(a, b, strict=True)]
    assert list(fp.to_int(fp.neg(wa))) == [signed(-x) for x in a]


def test_overflow_flags_are_exactly_the_out_of_range_results():
    a, b = random_ints(2, 500), random_ints(3, 500)
    wa, wb = words(a), words(b)
    add_over = np.asarray(fp.add_overflows(wa, wb, fp.add(wa, wb)))
    sub_over = np.asarray(fp.sub_overflows(wa, wb, fp.sub(wa, wb)))
    in_range = lambda v: -(2**63) <= v < 2**63
    assert list(add_over) == [not in_range(x + y) for x, y in zip(a, b, strict=True)]
    assert list(sub_over) == [not in_range(x - y) for x, y in zip(a, b, strict=True)]
    assert add_over.any() and sub_over.any() and not add_over.all()


@pytest.mark.parametrize("n", [1, 2, 255, 256, 32768, 58982, 65535])
def test_floor_division_at_the_sign_and_limb_edges(n):
    # The top 16-bit limb is divided as a signed number, the three below unsigned: values
    # at multiples of n, around +-2^48 (the top limb's unit) and at the ends of the range.
    ends = [0, 1, -1, 2**63 - 1, -(2**63), 2**48, -(2**48), 2**48 - 1, -(2**48) - 1, -(2**32)]
    near = [k * n + r for k in (-(2**47), -(2**31), -7, -1, 0, 1, 7, 2**31, 2**47 - 1)
            for r in (0, 1, n - 1)]  # fmt: skip
    values = [v for v in ends + near if -(2**63) <= v < 2**63]
    q, r = fp.floor_divmod_signed(words(values), jnp.uint32(n))
    assert list(fp.to_int(q)) == [v // n for v in values]
    assert list(np.asarray(r)) == [v % n for v in values]


@pytest.mark.parametrize("n", [1, 3, 32768, 58982, 65470, 65535])
def test_multiply_shift_and_floor_division_by_small_n(n):
    a = random_ints(4, 400)
    wa = words(a)
    assert list(fp.to_int(fp.mul_small(wa, jnp.uint32(n)))) == [signed(x * n) for x in a]
    assert list(fp.to_int(fp.shift_right_16(wa))) == [x >> 16 for x in a]
    q, r = fp.floor_divmod_signed(wa, jnp.uint32(n))
    assert list(fp.to_int(q)) == [x // n for x in a]
    assert list(np.asarray(r)) == [x % n for x in a]


@pytest.mark.parametrize("n", [1, 2, 7, 255, 40000, 65535])
def test_divmod_small_is_exact_over_its_whole_domain_edges(n):
    rng = np.random.default_rng(n)
    top = n * 2**16
    cur = np.concatenate([rng.integers(0, top, 20000), np.arange(0, 300), top - 1 - np.arange(300)])
    cur = np.concatenate([cur, (np.arange(1, 2**16)[:, None] * n + np.array([-1, 0])).ravel()])
    cur = cur[(cur >= 0) & (cur < top)].astype(np.uint64)
    inv = (1.0 / jnp.float32(n)) * jnp.float32(1.0 - 2.0**-20)
    q, r = fp.divmod_small(jnp.asarray(cur, jnp.uint32), jnp.uint32(n), inv)
    np.testing.assert_array_equal(np.asarray(q, np.uint64), cur // n)
    np.testing.assert_array_equal(np.asarray(r, np.uint64), cur % n)


@given(
    st.lists(st.integers(-(2**62), 2**62), min_size=8, max_size=8), st.sampled_from([12, 44, 50])
)
def test_from_float_rounds_half_to_even_like_python(values, frac_bits):
    x = np.array(values, np.float64) * 2.0**-frac_bits / 3.0
    x = np.concatenate([x, [0.5 * 2.0**-frac_bits, 1.5 * 2.0**-frac_bits, -2.5 * 2.0**-frac_bits]])
    word, overflow = fp.from_float(jnp.asarray(x), frac_bits)
    assert not np.asarray(overflow).any()
    expected = [round(float(v) * 2**frac_bits) for v in x]  # Python: half to even
    assert list(fp.to_int(word)) == expected


def test_from_float_flags_non_finite_and_out_of_range_values():
    x = jnp.array([jnp.inf, -jnp.inf, jnp.nan, 2.0**19, -(2.0**20), 2.0**19 - 2.0**-5], jnp.float32)
    word, overflow = fp.from_float(x, 44)
    assert list(np.asarray(overflow)) == [True, True, True, True, True, False]
    assert list(fp.to_int(word))[:5] == [0] * 5
    assert fp.to_int(word)[5] == 2**63 - 2**39  # the largest float32 below the range


def test_to_float_keeps_small_negative_values_in_float32():
    # hi = -1 with a large lo word: converting hi and lo separately would cancel to 0.
    values = [-5, -1, -(2**31) - 3, 7, -(2**40) - 1]
    got = np.asarray(fp.to_float(words(values), 20, jnp.float32))
    np.testing.assert_allclose(got, np.array(values, np.float64) * 2.0**-20, rtol=1e-7)
    got64 = np.asarray(fp.to_float(words(values), 20, jnp.float64))
    assert list(got64) == [v * 2.0**-20 for v in values]


def reference_mul_ratio(v, b, n):
    """The docstring's loop with Python integers: pop r2 (base n), then push r1 (base 2^16)."""
    b, r2 = divmod(b, n)
    q, r1 = divmod(v, 2**16)
    return q * n + r2, b * 2**16 + r1


@pytest.mark.parametrize("n", [256, 32768, 58982, 65470])
def test_mul_ratio_matches_python_integers_and_unmul_ratio_inverts_it(n):
    v = random_ints(5, 300, -(2**62), 2**62)
    b = [x % 2**32 for x in random_ints(6, 300, 0, 2**32)]  # edges include 2^32 - 1
    b = [x % (n * 2**16) if i < 200 else x for i, x in enumerate(b)]  # most fit after the step
    word = jnp.array(b, jnp.uint32)
    new_v, new_w, overflow = buffer.mul_ratio(words(v), word, jnp.uint32(n))
    expected = [reference_mul_ratio(x, y, n) for x, y in zip(v, b, strict=True)]
    fits = np.array([e[1] < 2**32 for e in expected])
    assert list(np.asarray(overflow)) == list(~fits) and fits.sum() > 100
    assert list(fp.to_int(new_v)[fits]) == [e[0] for e, f in zip(expected, fits, strict=True) if f]
    got_b = np.asarray(new_w)[fits].tolist()
    assert got_b == [e[1] for e, f in zip(expected, fits, strict=True) if f]
    back_v, back_w = buffer.unmul_ratio(new_v, new_w, jnp.uint32(n))
    assert list(fp.to_int(back_v)[fits]) == list(np.array(v, object)[fits])
    assert np.asarray(back_w)[fits].tolist() == list(np.array(b, object)[fits])


def test_spill_and_restore_move_the_high_byte_of_the_word():
    word = jnp.array([0x12345678, 0xFF000001, 0x00BEEF00], jnp.uint32)
    slots = jnp.zeros((3, 3), jnp.uint8)
    low, slots = buffer.spill(word, slots, jnp.bool_(True), 1)
    assert np.asarray(low).tolist() == [0x345678, 0x000001, 0xBEEF00]
    assert np.asarray(slots[1]).tolist() == [0x12, 0xFF, 0] and not np.asarray(slots[0]).any()
    back, mismatch = buffer.restore(low, slots, jnp.bool_(True), 1)
    assert np.asarray(back).tolist() == np.asarray(word).tolist() and not mismatch.any()
    kept, mismatch = buffer.restore(low + jnp.uint32(1 << 24), slots, jnp.bool_(True), 1)
    assert mismatch.all()  # a high byte left where the spill had emptied it
    # ... is kept, XORed with the slot's byte, not dropped: restoring stays injective.
    assert np.asarray(kept).tolist() == [0x13345678, 0xFE000001, 0x01BEEF00]
    same, unchanged = buffer.spill(word, slots, jnp.bool_(False), 2)
    assert np.array_equal(same, word) and np.array_equal(unchanged, slots)


def test_spill_schedule_keeps_every_word_below_2_32_on_worst_case_words():
    rng = np.random.default_rng(7)
    numerators = [int(n) for n in rng.integers(256, 65535, 3000)]
    spill, slot, end = buffer.spill_schedule(0, numerators)
    # Simulate the largest possible word (every pushed digit maximal) with Python integers.
    worst, slots_used = 0, []
    for k, n in enumerate(numerators):
        if spill[k]:
            slots_used.append(int(slot[k]))
            worst = min(worst, 2**24 - 1)  # the low 24 bits left in the word
        worst = (worst // n) * 2**16 + 2**16 - 1  # pop (base n), then push 2^16 - 1
        assert worst < 2**32
        # Without the spill the next step would have overflowed:
        if k + 1 < len(numerators) and spill[k + 1]:
            assert (worst // numerators[k + 1]) * 2**16 + 2**16 - 1 >= 2**32
    assert worst == end
    assert slots_used == list(range(len(slots_used))) and len(slots_used) == spill.sum()
    assert np.all(slot[~spill] == len(slots_used) - 1)


def test_fingerprint_changes_with_any_entry_its_position_and_the_step():
    rng = np.random.default_rng(8)
    base = words([int(v) for v in rng.integers(-(2**62), 2**62, 12)])
    base = fp.Word(base.hi.reshape(3, 4), base.lo.reshape(3, 4))
    ref = int(fp.fingerprint(base, 5))
    assert int(fp.fingerprint(base, 6)) != ref
    for i in range(3):
        for j in range(4):
            for part in ("hi", "lo"):
                changed = getattr(base, part).at[i, j].add(jnp.uint32(1))
                assert int(fp.fingerprint(base._replace(**{part: changed}), 5)) != ref
    swapped = fp.Word(base.hi[::-1], base.lo[::-1])  # rows trade places
    assert int(fp.fingerprint(swapped, 5)) != ref


@pytest.mark.parametrize("bits", [32, 44, 61, 62, 63])
def test_fits_is_the_signed_range_check(bits):
    values = random_ints(9, 300) + [2**bits - 1, 2**bits, -(2**bits), -(2**bits) - 1]
    values = [v for v in values if -(2**63) <= v < 2**63]
    got = np.asarray(fp.fits(words(values), bits))
    assert list(got) == [-(2**bits) <= v < 2**bits for v in values]
