"""Tests for the 1-D conv stacks in jukebox.nn.conv."""

from __future__ import annotations

import pytest
import torch

from jukebox.nn.conv import (
    DecoderBlock,
    EncoderBlock,
    ResidualStack,
    openai_decoder_block_keys,
    openai_encoder_block_keys,
    openai_residual_stack_keys,
)


@pytest.fixture(autouse=True)
def _one_thread():
    """Tiny models run fastest single-threaded (and do not stall on a busy 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def test_residual_stack_dilations():
    assert ResidualStack(8, 4, dilation_growth_rate=3).dilations == (1, 3, 9, 27)
    assert ResidualStack(8, 4, dilation_growth_rate=3, reverse_dilation=True).dilations == (27, 9, 3, 1)
    assert ResidualStack(8, 5, dilation_growth_rate=2, dilation_cycle=2).dilations == (1, 2, 1, 2, 1)


def test_zero_out_is_identity():
    stack = ResidualStack(8, 3, dilation_growth_rate=3, zero_out=True, res_scale=True)
    x = torch.randn(2, 8, 40)
    torch.testing.assert_close(stack(x), x)
    assert stack.blocks[0].res_scale == pytest.approx(1 / 3**0.5)


@pytest.mark.parametrize("down_t,stride_t", [(0, 2), (1, 2), (3, 2), (2, 4)])
def test_block_shapes(down_t, stride_t):
    enc = EncoderBlock(1, 16, down_t, stride_t, width=8, depth=2, dilation_growth_rate=3)
    dec = DecoderBlock(16, 1 if down_t else 16, down_t, stride_t, width=8, depth=2, dilation_growth_rate=3,
                       reverse_dilation=True)
    t = 64
    x = torch.randn(2, 1 if down_t else 16, t)
    z = enc(x)
    factor = stride_t**down_t
    assert z.shape == (2, 16 if down_t else x.shape[1], t // factor)
    y = dec(torch.randn(2, 16, t // factor))
    assert y.shape == (2, 1 if down_t else 16, t)


def test_checkpoint_res_same_values_and_grads():
    torch.manual_seed(0)
    a = DecoderBlock(8, 4, 2, 2, width=8, depth=3, dilation_growth_rate=3, checkpoint_res=False)
    b = DecoderBlock(8, 4, 2, 2, width=8, depth=3, dilation_growth_rate=3, checkpoint_res=True)
    b.load_state_dict(a.state_dict())
    x = torch.randn(2, 8, 10)
    ya, yb = a(x), b(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    for pa, pb in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(pa.grad, pb.grad)


def test_openai_key_tables_cover_state_dict():
    enc = EncoderBlock(1, 16, 3, 2, width=8, depth=4)
    assert set(openai_encoder_block_keys(3, 4)) == set(enc.state_dict())
    dec = DecoderBlock(16, 1, 2, 2, width=8, depth=3)
    table = openai_decoder_block_keys(2, 3, checkpoint_res=True)
    assert set(table) == set(dec.state_dict())
    assert all(".blocks." in v for k, v in table.items() if ".res." in k)
    assert set(openai_residual_stack_keys(3)) == set(ResidualStack(8, 3).state_dict())
