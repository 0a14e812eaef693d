"""Balanced training windows: ``CodeWindowSampler(balance=...)`` evens out genres (or artists) by a power of their
amount of music; ``none`` keeps the uniform draw (and the batches of earlier runs)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import numpy as np
import pytest

from jukebox.data.code_cache import CodeWindowSampler
from jukebox.data.dataset import Manifest, Track
from jukebox.errors import JukeboxError

N_CTX = 16


class _Cache:
    """The parts of a CodeCache a window sampler reads: one level, hop 1, codes = the position."""

    levels, hop_lengths, sample_rate = 1, (1,), 100

    def __init__(self, lengths: dict[str, int]) -> None:
        self.tracks = {p: SimpleNamespace(length=[n], total_length=n) for p, n in lengths.items()}

    def require_levels(self, *levels: int) -> None:
        pass

    def codes(self, path: str, level: int) -> np.ndarray:
        return np.arange(self.tracks[path].length[0])


def _sampler(balance: str = "none", power: float = 0.0) -> CodeWindowSampler:
    # electronic: 3 long tracks (9 x the music of folk); folk: 1 short track; two artists in electronic
    spec = [("e1.flac", "electronic", "a", 315), ("e2.flac", "electronic", "a", 315),
            ("e3.flac", "electronic", "b", 315), ("f1.flac", "folk", "c", 120)]
    tracks = [Track(p, n / 100, 100, 1, artist=a, genre=g, split="train") for p, g, a, n in spec]
    cache = _Cache({p: n for p, _, _, n in spec})
    return CodeWindowSampler(cache, Manifest("/x", tracks), 0, N_CTX, "train", balance=balance,  # type: ignore[arg-type]
                             balance_power=power)


def _genres(sampler: CodeWindowSampler, n: int = 20000) -> Counter:
    idx = sampler.draw(np.random.default_rng(0), n)
    return Counter(sampler.window(int(i)).genre for i in idx)


def test_balance_none_is_the_uniform_draw_of_before():
    s = _sampler()
    rng_a, rng_b = np.random.default_rng(5), np.random.default_rng(5)
    assert np.array_equal(s.draw(rng_a, 64), rng_b.integers(len(s), size=64))
    share = _genres(s)["folk"] / 20000
    assert abs(share - 105 / (3 * 300 + 105)) < 0.01  # in proportion to window starts: ~10% folk


@pytest.mark.parametrize("power,folk", [(0.0, 0.5), (0.5, 105**0.5 / (105**0.5 + 900**0.5)), (1.0, 105 / 1005)])
def test_balance_by_genre_follows_the_power(power, folk):
    s = _sampler("genre", power)
    assert s.shares["folk"] == pytest.approx(folk)
    got = _genres(s)
    assert got["folk"] / 20000 == pytest.approx(folk, abs=0.012)
    # every start of a track can be drawn, and windows are whole and in range
    idx = s.draw(np.random.default_rng(1), 5000)
    assert idx.min() >= 0 and idx.max() < len(s)
    w = s.window(int(idx[0]))
    assert len(w.z) == N_CTX


def test_balance_by_artist_and_errors():
    s = _sampler("artist", 0.0)
    idx = s.draw(np.random.default_rng(2), 30000)
    artists = Counter(s.window(int(i)).artist for i in idx)
    assert all(abs(artists[a] / 30000 - 1 / 3) < 0.012 for a in "abc")
    with pytest.raises(JukeboxError, match="balance must be"):
        _sampler("mood")
