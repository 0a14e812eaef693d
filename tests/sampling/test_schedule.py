import pytest

from jukebox.sampling.schedule import WindowStep, plan_level, window_starts


def reference_starts(total, n_ctx, hop):
    """Independent restatement of Jukebox's rule: stride hop, last window flush with the end."""
    out = []
    for s in range(0, total - n_ctx + hop, hop):
        out.append(min(s, total - n_ctx))
    return out


@pytest.mark.parametrize("total,n_ctx,hop", [(128, 64, 8), (64, 64, 32), (100, 64, 32), (2048, 64, 32), (65, 64, 64)])
def test_window_starts_match_rule(total, n_ctx, hop):
    assert window_starts(total, n_ctx, hop) == reference_starts(total, n_ctx, hop)


def test_plan_covers_every_token_once():
    for total, n_ctx, hop, have in [(128, 64, 8, 0), (200, 64, 16, 70), (512, 64, 32, 0), (64, 64, 8, 10)]:
        steps = plan_level(total, have, n_ctx, hop)
        covered = have
        for s in steps:
            assert s.start + s.known == covered, (total, s)
            assert s.length <= n_ctx and s.new_tokens > 0
            covered = s.start + s.length
        assert covered == total


def test_short_levels_sample_one_partial_window():
    assert plan_level(40, 0, 64, 8) == [WindowStep(0, 40, 0)]
    assert plan_level(40, 10, 64, 8) == [WindowStep(0, 40, 10)]
    assert plan_level(40, 40, 64, 8) == []


def test_bad_hop():
    with pytest.raises(ValueError):
        window_starts(100, 64, 0)
