"""Lyric character vocabularies, text cleaning and tokenisation, as the original Jukebox has them.

Two vocabularies exist:

* ``v2`` (5b_lyrics and the label-conditioned upsamplers): 80 ids, includes ``+``.
* ``v3`` (1b_lyrics): 79 ids, no ``+``.

Id 0 is ``<unk>``; it is also the padding id of a lyric window and decodes to the empty string. Ids
``1..n_vocab-1`` are the characters of :attr:`LyricVocab.chars` in order.

Cleaning transliterates to ASCII with ``unidecode``, turns a backslash into a newline and drops every character
outside the vocabulary, so any Unicode string (emoji, CJK, right-to-left scripts, control characters, lone
surrogates) cleans to a string that tokenises.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Literal

from unidecode import unidecode

from ..errors import UsageError

LyricVersion = Literal["v2", "v3"]

_LETTERS_DIGITS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789"
_V2_CHARS = _LETTERS_DIGITS + ".,:;!?-+'\"()[] \t\n"
_V3_CHARS = _LETTERS_DIGITS + ".,:;!?-'\"()[] \t\n"
_CHARS = {"v2": _V2_CHARS, "v3": _V3_CHARS}

UNK_ID = 0
"""Id of ``<unk>``: the padding id of a lyric window; decodes to ``''``."""

MAX_LYRIC_CHARS = 65_536
"""Longest lyrics accepted (characters, before cleaning): some 30 pages of text, far more than a song has. The
alignment of a lyric model holds a row per character, so without a bound a few megabytes of text would cost
gigabytes after all the sampling."""


def check_lyrics_length(text: str, what: str = "the lyrics") -> str:
    """Return ``text``, or raise a :class:`UsageError` when it is longer than :data:`MAX_LYRIC_CHARS`."""
    if len(text) > MAX_LYRIC_CHARS:
        raise UsageError(f"{what} are {len(text):,} characters long; at most {MAX_LYRIC_CHARS:,} are accepted")
    return text


@dataclass(frozen=True)
class LyricVocab:
    """A character vocabulary: ``chars[i]`` has id ``i + 1``; id 0 is ``<unk>``."""

    version: str
    chars: str
    _ids: dict[str, int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(set(self.chars)) != len(self.chars):
            raise ValueError("lyric vocabulary characters must be distinct")
        object.__setattr__(self, "_ids", {c: i + 1 for i, c in enumerate(self.chars)})

    @property
    def n_vocab(self) -> int:
        """Number of ids, ``<unk>`` included (80 for v2, 79 for v3)."""
        return len(self.chars) + 1

    @property
    def vocab(self) -> dict[str, int]:
        """The character -> id map, with ``'<unk>' -> 0`` (as the original's ``TextProcessor.vocab``)."""
        out = dict(self._ids)
        out["<unk>"] = UNK_ID
        return out

    def clean(self, text: str) -> str:
        """Transliterate ``text`` to ASCII, map ``\\`` to newline and drop characters outside the vocabulary.

        Lyrics longer than :data:`MAX_LYRIC_CHARS` are a :class:`UsageError`."""
        check_lyrics_length(text)
        with warnings.catch_warnings():
            # unidecode warns about lone surrogates (and drops them); that is what we want, silently.
            warnings.simplefilter("ignore", RuntimeWarning)
            ascii_text = unidecode(text)
        ascii_text = ascii_text.replace("\\", "\n")
        ids = self._ids
        return "".join(c for c in ascii_text if c in ids)

    def tokenise(self, text: str) -> list[int]:
        """Ids of an already cleaned ``text``; a character outside the vocabulary is a :class:`UsageError`."""
        ids = self._ids
        try:
            return [ids[c] for c in text]
        except KeyError as e:
            raise UsageError(
                f"character {e.args[0]!r} is not in the {self.version} lyric vocabulary; clean the text first"
            ) from None

    def encode(self, text: str) -> list[int]:
        """Clean then tokenise: never fails for any ``str``."""
        return self.tokenise(self.clean(text))

    def characterise(self, tokens: Iterable[int]) -> list[str]:
        """One string per id (``''`` for id 0); an id out of range is a :class:`UsageError`."""
        out = []
        chars = self.chars
        for token in tokens:
            token = int(token)
            if token == UNK_ID:
                out.append("")
            elif 0 < token <= len(chars):
                out.append(chars[token - 1])
            else:
                raise UsageError(f"lyric token {token} is outside the {self.version} vocabulary [0, {self.n_vocab})")
        return out

    def detokenise(self, tokens: Iterable[int]) -> str:
        """Text of ``tokens`` (padding id 0 vanishes); inverse of :meth:`tokenise`."""
        return "".join(self.characterise(tokens))


@cache
def lyric_vocab(version: str = "v2") -> LyricVocab:
    """The original's lyric vocabulary ``"v2"`` (80 ids) or ``"v3"`` (79 ids)."""
    if version not in _CHARS:
        raise UsageError(f"unknown lyric vocabulary version {version!r}; expected one of {sorted(_CHARS)}")
    return LyricVocab(version, _CHARS[version])


def clean_lyrics(text: str, version: str = "v2") -> str:
    """Clean ``text`` for the ``version`` vocabulary (see :meth:`LyricVocab.clean`)."""
    return lyric_vocab(version).clean(text)


def tokenise_lyrics(text: str, version: str = "v2") -> list[int]:
    """Clean and tokenise ``text`` with the ``version`` vocabulary."""
    return lyric_vocab(version).encode(text)


def detokenise_lyrics(tokens: Sequence[int], version: str = "v2") -> str:
    """Text of ``tokens`` in the ``version`` vocabulary."""
    return lyric_vocab(version).detokenise(tokens)
