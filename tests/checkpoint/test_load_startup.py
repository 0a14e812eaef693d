"""Loading a model directory stays cheap: priors are built on the meta device without random fills (whose meta
implementation would import torch._dynamo and sympy, over a second of start-up), and loading leaves the process's
thread setting as it was."""

from __future__ import annotations

import subprocess
import sys

import torch

from jukebox.checkpoint.model_dir import ModelDir
from jukebox.prior import Prior
from jukebox.prior.config import prior_preset


def test_prior_round_trip_restores_threads(tmp_path):
    torch.manual_seed(0)
    prior = Prior(prior_preset("tiny_upsampler").replace(level=1)).eval()
    model_dir = ModelDir(tmp_path / "m", create=True)
    model_dir.save_prior(prior)
    threads = torch.get_num_threads()
    loaded = model_dir.load_prior(1)
    assert torch.get_num_threads() == threads
    want = prior.state_dict()
    got = loaded.state_dict()
    assert want.keys() == got.keys()
    for k, v in want.items():
        assert not got[k].is_meta, k
        assert torch.equal(got[k], v), k


def test_loading_priors_imports_no_compiler(tmp_path):
    torch.manual_seed(0)
    model_dir = ModelDir(tmp_path / "m", create=True)
    model_dir.save_prior(Prior(prior_preset("tiny_top").replace(level=2)).eval())
    code = ("import sys\nfrom jukebox.checkpoint.model_dir import ModelDir\n"
            f"ModelDir({str(tmp_path / 'm')!r}).load_prior(2)\n"
            "print(sorted({m.split('.')[0] + '.' + m.split('.')[1] if m.startswith('torch.') else m.split('.')[0]"
            " for m in sys.modules} & {'torch._dynamo', 'sympy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
