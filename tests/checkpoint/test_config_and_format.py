import json

import pytest
import torch

from jukebox.checkpoint.format import load_into, load_weights, save_weights, weight_shapes
from jukebox.checkpoint.safe_load import safe_torch_load, to_plain
from jukebox.config import VQVAEConfig, vqvae_preset
from jukebox.errors import JukeboxError
from jukebox.hparams import Hyperparams


def test_config_json_round_trip(tmp_path):
    cfg = vqvae_preset("tiny")
    cfg.save_json(tmp_path / "c.json")
    back = VQVAEConfig.load_json(tmp_path / "c.json")
    assert back == cfg and isinstance(back.downs_t, tuple)
    assert vqvae_preset("openai").hop_lengths == (8, 32, 128)


def test_config_strict(tmp_path):
    data = vqvae_preset("tiny").to_dict()
    data["surprise"] = 1
    (tmp_path / "c.json").write_text(json.dumps(data))
    with pytest.raises(JukeboxError, match="unknown VQVAEConfig keys"):
        VQVAEConfig.load_json(tmp_path / "c.json")
    with pytest.raises(JukeboxError, match="unknown VQ-VAE preset"):
        vqvae_preset("nope")
    with pytest.raises(dataclasses_error()):
        vqvae_preset("tiny").levels = 2  # frozen


def dataclasses_error():
    import dataclasses

    return dataclasses.FrozenInstanceError


class Small(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.a = torch.nn.Linear(4, 3)
        self.b = torch.nn.Linear(3, 2)
        self.register_buffer("k", torch.zeros(5))


def test_weights_round_trip_sharded_and_meta(tmp_path):
    src = Small()
    src.k.normal_()
    save_weights(tmp_path / "one", src.state_dict())
    save_weights(tmp_path / "sharded", src.state_dict(), max_shard_bytes=40)
    assert (tmp_path / "sharded" / "model.safetensors.index.json").exists()
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    for folder in ("one", "sharded"):
        assert weight_shapes(tmp_path / folder)["a.weight"] == (3, 4)
        loaded = load_weights(tmp_path / folder)
        for k, v in src.state_dict().items():
            assert torch.equal(loaded[k], v)
        dst = Small()
        load_into(dst, tmp_path / folder)
        assert torch.equal(dst.b.weight, src.b.weight) and torch.equal(dst.k, src.k)
        with torch.device("meta"):
            meta = Small()
        load_into(meta, tmp_path / folder)
        assert not meta.a.weight.is_meta and torch.equal(meta.a.weight, src.a.weight)


def test_strict_load_reports_keys(tmp_path):
    sd = Small().state_dict()
    sd["extra"] = torch.zeros(1)
    sd["a.weight"] = torch.zeros(3, 5)
    del sd["b.bias"]
    save_weights(tmp_path / "bad", sd)
    with pytest.raises(JukeboxError) as e:
        load_into(Small(), tmp_path / "bad")
    msg = str(e.value)
    assert "missing: b.bias" in msg and "unexpected: extra" in msg and "a.weight (3, 5) != (3, 4)" in msg


def test_corrupt_weights_file(tmp_path):
    save_weights(tmp_path / "c", Small().state_dict())
    f = tmp_path / "c" / "model.safetensors"
    f.write_bytes(f.read_bytes()[:50])
    with pytest.raises(JukeboxError, match="corrupt or truncated"):
        load_weights(tmp_path / "c")


def test_safe_load_hyperparams_and_numpy(tmp_path):
    import numpy as np

    hps = Hyperparams(sr=44100, downs_t=(3, 2, 2), scale=np.float64(0.5), n=np.int64(3))
    torch.save({"model": {"w": torch.ones(2)}, "hps": hps}, tmp_path / "ok.pth.tar")
    torch.save({"model": {"w": torch.ones(2)}, "hps": hps}, tmp_path / "legacy.pth.tar",
               _use_new_zipfile_serialization=False)
    for name in ("ok.pth.tar", "legacy.pth.tar"):
        ckpt = safe_torch_load(tmp_path / name)
        assert torch.equal(ckpt["model"]["w"], torch.ones(2))
        assert to_plain(ckpt["hps"]) == {"sr": 44100, "downs_t": (3, 2, 2), "scale": 0.5, "n": 3}


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os

        return (os.mkdir, (self.marker,))


def test_malicious_pickle_runs_nothing(tmp_path):
    marker = str(tmp_path / "PWNED")
    torch.save({"model": {}, "hps": _Evil(marker)}, tmp_path / "evil.pth.tar")
    with pytest.raises(JukeboxError) as e:
        safe_torch_load(tmp_path / "evil.pth.tar")
    assert "refused" in str(e.value) and "mkdir" in str(e.value)
    assert not (tmp_path / "PWNED").exists()


def test_truncated_checkpoint(tmp_path):
    torch.save({"model": {"w": torch.ones(100)}}, tmp_path / "t.pth.tar")
    data = (tmp_path / "t.pth.tar").read_bytes()
    (tmp_path / "t.pth.tar").write_bytes(data[: len(data) // 2])
    with pytest.raises(JukeboxError, match="t.pth.tar"):
        safe_torch_load(tmp_path / "t.pth.tar")


def test_int8_storage_round_trip(tmp_path):
    """quantize_for_storage: large matrices as int8 + row scales, half the bytes of fp16; every loader returns the
    dequantised float matrix under its own name and shape (sharded too), within half a step of the int8 grid, and
    with the integers of the int8 CPU decode; small and non-matrix tensors unchanged; a damaged scale is an error."""
    from safetensors.torch import save_file

    from jukebox.checkpoint.format import QSCALE_SUFFIX, quantize_for_storage
    from jukebox.nn.quant import quantize_weight
    from jukebox.testing import make_tiny_model_dir

    torch.manual_seed(0)
    lin = torch.nn.Linear(256, 128)
    model = torch.nn.Sequential(lin, torch.nn.Embedding(300, 64), torch.nn.LayerNorm(64), torch.nn.Linear(8, 4))
    sd = {k: v.half() for k, v in model.state_dict().items()}
    stored = quantize_for_storage(sd)
    assert stored["0.weight"].dtype == torch.int8 and stored["1.weight"].dtype == torch.int8
    assert torch.equal(stored["0.weight"], quantize_weight(sd["0.weight"], "int8")[0])  # the CPU decode's integers
    assert stored["3.weight"].dtype == torch.float16 and "3.weight" + QSCALE_SUFFIX not in stored  # 32 entries
    assert stored["2.weight"].dtype == torch.float16 and stored["0.bias"].dtype == torch.float16
    save_weights(tmp_path / "fp16", sd)
    save_weights(tmp_path / "int8", stored)
    save_weights(tmp_path / "sharded", stored, max_shard_bytes=20_000)
    size = {k: sum(p.stat().st_size for p in (tmp_path / k).iterdir()) for k in ("fp16", "int8")}
    assert size["int8"] < 0.56 * size["fp16"]
    assert weight_shapes(tmp_path / "int8") == {k: tuple(v.shape) for k, v in sd.items()}
    for folder in ("int8", "sharded"):
        back = load_weights(tmp_path / folder)
        assert set(back) == set(sd) and all(back[k].shape == sd[k].shape for k in sd)
        for name in ("0.weight", "1.weight"):
            step = sd[name].float().abs().amax(dim=1, keepdim=True) / 127
            assert back[name].dtype == torch.float32
            assert ((back[name] - sd[name].float()).abs() <= step / 2 + 1e-6).all()
            assert not torch.equal(back[name], sd[name].float())  # quantised for real
        assert torch.equal(back["3.weight"], sd["3.weight"])
    fresh = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.Embedding(300, 64), torch.nn.LayerNorm(64),
                                torch.nn.Linear(8, 4))
    load_into(fresh, tmp_path / "sharded")
    assert torch.equal(fresh[0].weight, load_weights(tmp_path / "int8")["0.weight"])
    conv = torch.nn.Conv1d(64, 96, 3)  # a convolution weight: one scale per output channel
    conv_sd = {k: v.half() for k, v in conv.state_dict().items()}
    assert quantize_for_storage(conv_sd)["weight"].dtype == torch.float16  # matrices only unless asked
    conv_stored = quantize_for_storage(conv_sd, convolutions=True)
    assert conv_stored["weight"].dtype == torch.int8 and conv_stored["weight"].shape == (96, 64, 3)
    assert conv_stored["weight" + QSCALE_SUFFIX].shape == (96,) and conv_stored["bias"].dtype == torch.float16
    save_weights(tmp_path / "conv", conv_stored)
    conv_back = load_weights(tmp_path / "conv")["weight"]
    step = conv_sd["weight"].float().abs().amax(dim=(1, 2), keepdim=True) / 127
    assert conv_back.shape == (96, 64, 3) and ((conv_back - conv_sd["weight"].float()).abs() <= step / 2 + 1e-6).all()
    bad = dict(stored)
    bad["0.weight" + QSCALE_SUFFIX] = torch.ones(5)
    (tmp_path / "bad").mkdir()
    save_file({k: v.contiguous() for k, v in bad.items()}, str(tmp_path / "bad" / "model.safetensors"))
    with pytest.raises(JukeboxError, match="int8 weight must be"):
        load_weights(tmp_path / "bad")
    # a whole model directory exported with --weights int8 loads and samples like any other
    import subprocess
    import sys
    from pathlib import Path

    md = make_tiny_model_dir(tmp_path / "m")
    root = Path(__file__).resolve().parents[2]
    r = subprocess.run([sys.executable, str(root / "recipes" / "export_model.py"), str(md.path), str(tmp_path / "q"),
                        "--weights", "int8"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    from jukebox.api import load_model

    jb = load_model(tmp_path / "q", device="cpu")
    out = jb.generate(seconds=2 * 32 * 8 * 4 / jb.sample_rate, seed=0, levels=[2], alignment=False)
    assert out.codes[2].shape[0] == 1
    qfiles = load_weights(tmp_path / "q" / "prior_level_2")
    assert set(qfiles) == set(md.load_prior(2).state_dict())


def test_export_int8_conv(tmp_path, monkeypatch):
    """``export_model.py --weights int8-conv``: the upsamplers' conditioner convolutions in int8 too; the model loads
    with the same parameter names and shapes."""
    import sys
    from functools import partial
    from pathlib import Path

    from safetensors import safe_open

    from jukebox.api import load_model
    from jukebox.checkpoint.format import QSCALE_SUFFIX, quantize_for_storage
    from jukebox.testing import make_tiny_model_dir

    sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "recipes"))
    try:
        import export_model
    finally:
        sys.path.pop(0)
    md = make_tiny_model_dir(tmp_path / "m")
    monkeypatch.setattr(export_model, "quantize_for_storage", partial(quantize_for_storage, min_elements=256))
    export_model.export(md.path, tmp_path / "q", "int8-conv")  # the tiny model's convolutions are small
    with safe_open(str(tmp_path / "q" / "prior_level_0" / "model.safetensors"), framework="pt") as f:
        names = list(f.keys())
        convs = [n for n in names if n + QSCALE_SUFFIX in names and len(f.get_slice(n).get_shape()) == 3]
    plain = load_weights(md.path / "prior_level_0")
    big = [n for n, t in plain.items() if t.dim() == 3 and t.numel() >= 256]
    assert big and set(convs) == set(big)
    back = load_weights(tmp_path / "q" / "prior_level_0")
    assert {k: v.shape for k, v in back.items()} == {k: v.shape for k, v in plain.items()}
    load_model(tmp_path / "q", device="cpu")

    # --weights int8 --conv-levels 1: the level-1 upsampler's convolutions in int8, level 0's kept in fp16
    export_model.export(md.path, tmp_path / "c", "int8", conv_levels=(1,))

    def int8_convs(level: int) -> list[str]:
        with safe_open(str(tmp_path / "c" / f"prior_level_{level}" / "model.safetensors"), framework="pt") as f:
            names = list(f.keys())
            return [n for n in names if n + QSCALE_SUFFIX in names and len(f.get_slice(n).get_shape()) == 3]

    assert int8_convs(1) and not int8_convs(0)
    load_model(tmp_path / "c", device="cpu")
