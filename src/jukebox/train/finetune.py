"""Fine-tuning helpers: extend a prior's artist/genre vocabularies with new names and grow its label embeddings.

New names get the next free ids; old ids and their embedding rows are kept exactly. The rows of new ids start
at the mean of the rows of the names the model already knew (a neutral "some artist" / "some genre"), which
trains faster and samples more sensibly than random rows.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from ..data.labels import UNKNOWN, UNKNOWN_ID, LabelVocab, normalize_name, split_genre
from ..prior import Prior


def extend_vocab(vocab: LabelVocab, artists: Iterable[str], genres: Iterable[str]
                 ) -> tuple[LabelVocab, list[int], list[int]]:
    """``vocab`` plus the names of ``artists``/``genres`` it lacks (normalised with its rules).

    Returns ``(new vocab, new artist ids, new genre ids)``; ``y_bins`` grows when the ids need it.
    """
    a_table, g_table = vocab.artist_ids, vocab.genre_ids_table
    new_a, new_g = [], []
    for key in sorted({normalize_name(a, vocab.version) for a in artists} - {"", UNKNOWN} - set(a_table)):
        a_table[key] = max(a_table.values()) + 1
        new_a.append(a_table[key])
    words = {w for g in genres for w in split_genre(g, vocab.version)}
    for key in sorted(words - {"", UNKNOWN} - set(g_table)):
        g_table[key] = max(g_table.values()) + 1
        new_g.append(g_table[key])
    bins = (max(vocab.y_bins[0], max(g_table.values()) + 1), max(vocab.y_bins[1], max(a_table.values()) + 1))
    return LabelVocab(a_table, g_table, vocab.version, vocab.lyric_version, bins), new_a, new_g


def _grow(weight: torch.Tensor, bins: int, new_ids: list[int], known_ids: list[int]) -> torch.Tensor:
    """Embedding rows [bins, W]: the old rows kept, ``new_ids`` set to the mean of ``known_ids`` rows."""
    w = weight.detach()
    if bins > w.shape[0]:
        w = torch.cat([w, w.new_zeros(bins - w.shape[0], w.shape[1])], dim=0)
    else:
        w = w.clone()
    known = [i for i in known_ids if i < weight.shape[0]] or list(range(weight.shape[0]))
    if new_ids:
        w[new_ids] = weight.detach()[known].mean(dim=0, keepdim=True).to(w.dtype)
    return w


def extend_prior_labels(prior: Prior, old: LabelVocab, new: LabelVocab, new_artist_ids: list[int],
                        new_genre_ids: list[int]) -> Prior:
    """A copy of ``prior`` whose label embeddings cover ``new`` (old rows kept, new rows the mean of known ones).

    Returns ``prior`` itself when nothing changes.
    """
    labels = prior.config.labels
    if labels is None:
        return prior
    genre_bins = max(labels.genre_bins, new.y_bins[0])
    artist_bins = max(labels.artist_bins, new.y_bins[1])
    if not new_artist_ids and not new_genre_ids and (genre_bins, artist_bins) == (labels.genre_bins,
                                                                                 labels.artist_bins):
        return prior
    config = prior.config.replace(labels=labels.replace(genre_bins=genre_bins, artist_bins=artist_bins))
    state = prior.state_dict()
    known_a = sorted(set(old.artist_ids.values()) - {UNKNOWN_ID})
    known_g = sorted(set(old.genre_ids_table.values()) - {UNKNOWN_ID})
    state["label_conditioner.artist_emb.weight"] = _grow(state["label_conditioner.artist_emb.weight"],
                                                         artist_bins, new_artist_ids, known_a)
    state["label_conditioner.genre_emb.weight"] = _grow(state["label_conditioner.genre_emb.weight"],
                                                        genre_bins, new_genre_ids, known_g)
    device = next(prior.parameters()).device
    out = Prior(config).to(device)
    out.load_state_dict(state, strict=True)  # copies, so tied weights stay tied
    return out.train(prior.training)
