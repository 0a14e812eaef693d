"""Logit filters: top-k against the original's output, top-p against a brute-force definition."""

from __future__ import annotations

import pytest
import torch

from conftest import load_reference
from jukebox.prior.logits import draw_tokens, filter_logits


def test_top_k_matches_reference():
    ref = load_reference("text_labels.pt")["filter_logits"]
    out = filter_logits(ref["logits"], top_k=5)
    assert torch.equal(out, ref["top_k5"])
    assert torch.equal(ref["logits"], load_reference("text_labels.pt")["filter_logits"]["logits"])  # input untouched


def _nucleus_mask(probs: torch.Tensor, top_p: float) -> torch.Tensor:
    """The smallest set of most likely tokens whose mass reaches ``top_p``, per row (float64, by hand)."""
    keep = torch.zeros_like(probs, dtype=torch.bool)
    for r in range(probs.shape[0]):
        order = sorted(range(probs.shape[1]), key=lambda i: -probs[r, i].item())
        mass = 0.0
        for i in order:
            keep[r, i] = True
            mass += probs[r, i].item()
            if mass >= top_p:
                break
    return keep


@pytest.mark.parametrize("top_p", [0.05, 0.3, 0.5, 0.9, 0.99])
def test_top_p_keeps_smallest_set_reaching_mass(top_p):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 50, generator=g, dtype=torch.float64) * 2
    probs = torch.softmax(logits, dim=-1)
    # Skip rows where some prefix mass is within float32 rounding of top_p (ambiguous at that precision).
    cums = probs.sort(dim=-1, descending=True).values.cumsum(-1)
    ok = ((cums - top_p).abs() > 1e-5).all(dim=-1)
    out = filter_logits(logits.float(), top_p=top_p)
    kept = torch.isfinite(out)
    want = _nucleus_mask(probs, top_p)
    assert ok.sum() > 50
    assert torch.equal(kept[ok], want[ok])
    assert torch.equal(out[kept], logits.float()[kept])  # kept logits unchanged
    mass = torch.where(kept, probs, torch.zeros_like(probs)).sum(-1)
    assert (mass[ok] >= top_p).all()


def test_top_p_edges_and_batching():
    logits = torch.tensor([[3.0, 1.0, 0.0, -1.0]])
    assert torch.isfinite(filter_logits(logits, top_p=1e-6)).sum() == 1  # the most likely token always stays
    assert torch.equal(filter_logits(logits, top_p=1.0), logits)  # 1.0 and 0.0 mean "off"
    assert torch.equal(filter_logits(logits, top_p=0.0), logits)
    # A token exactly completing the mass is kept; the next one is not.
    p = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    assert torch.isfinite(filter_logits(p, top_p=0.75)).tolist() == [[True, True, False, False]]
    # Arbitrary leading dims and combination with top-k (top-k first).
    x = torch.randn(2, 3, 40, generator=torch.Generator().manual_seed(1))
    out = filter_logits(x, top_k=5, top_p=0.9)
    assert out.shape == x.shape
    assert (torch.isfinite(out).sum(-1) <= 5).all() and (torch.isfinite(out).sum(-1) >= 1).all()
    sub = filter_logits(filter_logits(x, top_k=5), top_p=0.9)
    assert torch.equal(out, sub)
    with pytest.raises(ValueError):
        filter_logits(x, top_p=1.5)
    with pytest.raises(ValueError):
        filter_logits(x, top_k=-1)


@pytest.mark.parametrize("draw", ["multinomial", "cdf"])
def test_draws_respect_filters(draw):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 30, generator=g)
    allowed = torch.isfinite(filter_logits(logits, top_k=3, top_p=0.8))
    for _ in range(20):
        s = draw_tokens(logits, temperature=1.0, top_k=3, top_p=0.8, generator=g, draw=draw)
        assert allowed.gather(-1, s[:, None]).all()
    assert torch.equal(draw_tokens(logits, top_k=1, draw=draw), logits.argmax(-1))
    assert torch.equal(draw_tokens(logits, temperature=0.0, draw=draw), logits.argmax(-1))
