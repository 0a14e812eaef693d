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
