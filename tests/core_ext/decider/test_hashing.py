"""Assignment hash: XXH64 against the specification's reference vectors (and the
``xxhash`` package when installed), fixed bucket vectors, χ² uniformity of buckets
over 10⁶ ids, and independence of the buckets of one id under two salts."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from banditd.core_ext.decider import BUCKETS, assignment_bucket, hash64

PRIME32 = 2654435761


def sanity_buffer(n: int = 101) -> bytes:
    """xxhsum's sanity-check buffer: byte i = top byte of a squaring 32-bit generator."""
    out, gen = bytearray(), PRIME32
    for _ in range(n):
        out.append(gen >> 24)
        gen = (gen * gen) & 0xFFFFFFFF
    return bytes(out)


# Reference values: xxHash's xxhsum sanity check (seed 0 and seed PRIME32 over the
# buffer above) and widely published seed-0 digests of short strings.
VECTORS = [
    (b"", 0, 0xEF46DB3751D8E999),
    (b"", PRIME32, 0xAC75FDA2929B17EF),
    (sanity_buffer()[:1], 0, 0x4FCE394CC88952D8),
    (sanity_buffer()[:1], PRIME32, 0x739840CB819FA723),
    (sanity_buffer()[:14], 0, 0xCFFA8DB881BC3A3D),
    (sanity_buffer()[:14], PRIME32, 0x5B9611585EFCC9CB),
    (sanity_buffer(), 0, 0x0EAB543384F878AD),
    (sanity_buffer(), PRIME32, 0xCAA65939306F1E21),
    (b"a", 0, 0xD24EC4F1A98C6E5B),
    (b"abc", 0, 0x44BC2CF5AD770999),
    (b"Nobody inspects the spammish repetition", 0, 0xFBCEA83C8A378BF1),
]


@pytest.mark.parametrize(("data", "seed", "expected"), VECTORS)
def test_xxh64_reference_vectors(data: bytes, seed: int, expected: int) -> None:
    assert hash64(data, seed) == expected


def test_matches_the_xxhash_package_when_installed() -> None:
    xxhash = pytest.importorskip("xxhash")
    g = np.random.default_rng(0)
    for n in [*range(80), 255, 256, 257, 1000, 4099]:
        data = g.bytes(n)
        assert hash64(data) == xxhash.xxh64_intdigest(data)


def test_bytes_like_inputs_agree_and_text_is_refused() -> None:
    data = b"user-42"
    assert hash64(bytearray(data)) == hash64(memoryview(data)) == hash64(data)
    assert hash64(bytearray()) == 0xEF46DB3751D8E999
    with pytest.raises(TypeError, match="encode"):
        hash64("user-42")


# Regression vectors: a change here moves every user to another policy.
BUCKET_VECTORS = [
    ("exp-1", "user-1", 2598),
    ("exp-1", "user-2", 7096),
    ("salt", "alice", 2775),
    ("", "", 8373),
    ("ünï", "用户", 9602),
    ("movies-2024", "42", 9736),
]


@pytest.mark.parametrize(("salt", "user", "bucket"), BUCKET_VECTORS)
def test_assignment_bucket_vectors(salt: str, user: str, bucket: int) -> None:
    assert assignment_bucket(salt, user) == bucket
    raw = salt.encode("utf-8") + b"\x1f" + user.encode("utf-8")
    assert bucket == hash64(raw) % BUCKETS


def test_long_inputs_take_the_same_definition() -> None:
    salt, user = "s" * 300, "u" * 70_000
    assert assignment_bucket(salt, user) == hash64(
        salt.encode() + b"\x1f" + user.encode()) % BUCKETS


def test_separator_keeps_salt_and_user_apart() -> None:
    assert BUCKETS == 10_000
    pairs = [("ab", "c"), ("a", "bc")]
    assert len({hash64(s.encode() + b"\x1f" + u.encode()) for s, u in pairs}) == 2


@pytest.fixture(scope="module")
def million_buckets() -> tuple[np.ndarray, np.ndarray]:
    ids = [f"user-{i}" for i in range(1_000_000)]
    a = np.fromiter((assignment_bucket("exp-a", u) for u in ids), np.int64, len(ids))
    b = np.fromiter((assignment_bucket("exp-b", u) for u in ids), np.int64, len(ids))
    return a, b


def test_buckets_are_uniform_over_a_million_ids(million_buckets) -> None:
    """χ² goodness of fit over the 10 000 buckets (expected 100 per bucket); reject
    only below p = 1e-4."""
    a, _ = million_buckets
    counts = np.bincount(a, minlength=BUCKETS)
    assert counts.shape == (BUCKETS,)
    assert stats.chisquare(counts).pvalue > 1e-4


def test_buckets_under_two_salts_are_independent(million_buckets) -> None:
    """χ² test of independence on the 20 x 20 table of (bucket mod 20 under salt A,
    bucket mod 20 under salt B); 10⁶ ids, 2 500 expected per cell."""
    a, b = million_buckets
    table = np.zeros((20, 20), dtype=np.int64)
    np.add.at(table, (a % 20, b % 20), 1)
    assert stats.chi2_contingency(table).pvalue > 1e-4
    assert np.mean(a == b) < 2 / BUCKETS                 # not the same split
