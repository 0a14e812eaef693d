"""A model directory: the VQ-VAE, any priors that exist, and the label vocabularies, each in its own folder.

::

    MODEL_DIR/
      model.json              {"format": "jukebox-model", "version": 1, "name": ...}
      vqvae/                  config.json + safetensors (see checkpoint.format)
      prior_level_2/          top prior (+ tempi.json: typical tempi by genre, for tempo priors)
      prior_level_1/          upsamplers (optional: sampling uses whatever levels exist)
      prior_level_0/
      labels.json             artist/genre vocabularies and lyric version (jukebox.data.labels)

Components load one at a time, so sampling can keep only the level it is working on in memory.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch.overrides import TorchFunctionMode

from ..atomic import atomic_write_text
from ..config import VQVAEConfig
from ..errors import JukeboxError
from ..fileio import read_json
from .format import INDEX_NAME, WEIGHTS_NAME, load_into, save_weights

if TYPE_CHECKING:
    from ..prior import Prior
    from ..prior.config import PriorConfig
    from ..vqvae import VQVAE
    from ..vqvae.discriminator import Discriminator

FORMAT = "jukebox-model"
VERSION = 1


class _MetaBuild(TorchFunctionMode):
    """Inside ``torch.device("meta")``: skips the random initialisation of the module being built (its weights are
    loaded next). PyTorch runs ``normal_``, ``randn`` and scaling by a number on meta tensors through Python
    references whose first use imports ``torch._dynamo`` and ``sympy``: over a second of every command's start-up,
    for values that are never read."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in (torch.Tensor.normal_, torch.nn.init.normal_):
            tensor = args[0] if args else kwargs.get("tensor")
            if isinstance(tensor, torch.Tensor) and tensor.is_meta:
                return tensor
        elif func is torch.randn:
            return torch.empty(*args, **{k: v for k, v in kwargs.items() if k != "generator"})
        elif (func in (torch.Tensor.mul, torch.Tensor.__mul__, torch.Tensor.__rmul__) and len(args) == 2
              and not kwargs and isinstance(args[0], torch.Tensor) and args[0].is_meta
              and isinstance(args[1], (int, float))):
            return torch.empty(args[0].shape, dtype=args[0].dtype, device="meta")
        return func(*args, **kwargs)


def prior_folder(level: int) -> str:
    return f"prior_level_{level}"


class ModelDir:
    """Access to a model directory on disk. Nothing is loaded until asked for."""

    def __init__(self, path: str | Path, create: bool = False, name: str | None = None) -> None:
        self.path = Path(path)
        meta = self.path / "model.json"
        if create:
            if self.path.exists() and not self.path.is_dir():
                raise JukeboxError(f"{self.path}: exists and is not a folder")
            self.path.mkdir(parents=True, exist_ok=True)
            if not meta.exists():
                info = {"format": FORMAT, "version": VERSION, "name": name or self.path.name}
                atomic_write_text(meta, json.dumps(info, indent=2) + "\n")
        if not self.path.is_dir():
            raise JukeboxError(f"{self.path}: model directory not found")
        if not meta.exists():
            raise JukeboxError(f"{self.path}: not a jukebox model directory (no model.json); "
                               "create one with `jukebox import-openai` or `jukebox train vqvae`")
        self.info: dict[str, Any] = read_json(meta, "model.json", 2**20)  # a regular file of at most 1 MB
        if not isinstance(self.info, dict) or self.info.get("format") != FORMAT:
            raise JukeboxError(f"{meta}: not a jukebox model description")

    def __repr__(self) -> str:
        return f"ModelDir({str(self.path)!r}, levels={self.prior_levels()})"

    # ---------------------------------------------------------------- discovery
    def _has_weights(self, folder: Path) -> bool:
        return (folder / "config.json").exists() and (
            (folder / WEIGHTS_NAME).exists() or (folder / INDEX_NAME).exists()
        )

    def has_vqvae(self) -> bool:
        return self._has_weights(self.path / "vqvae")

    def prior_levels(self) -> list[int]:
        """Levels that have a prior, ascending."""
        return [lvl for lvl in range(8) if self._has_weights(self.path / prior_folder(lvl))]

    # ---------------------------------------------------------------- VQ-VAE
    def vqvae_config(self) -> VQVAEConfig:
        if not self.has_vqvae():
            raise JukeboxError(f"{self.path}: model directory has no VQ-VAE (vqvae/)")
        path = self.path / "vqvae" / "config.json"
        return check_sizes(VQVAEConfig.load_json(path), str(path))

    def load_vqvae(self, device: str | torch.device = "cpu") -> VQVAE:
        from ..vqvae import VQVAE

        config = self.vqvae_config()
        # no memory until the weight file's header has matched the model's shapes
        model = build_model(VQVAE, config, str(self.path / "vqvae" / "config.json"))
        load_into(model, self.path / "vqvae", where=f"{self.path}/vqvae")
        return model.to(device).eval()

    def save_vqvae(self, model: VQVAE) -> None:
        save_component(self.path / "vqvae", model.config, model.state_dict())

    # ---------------------------------------------------------------- priors
    def prior_config(self, level: int) -> PriorConfig:
        from ..prior.config import PriorConfig

        folder = self.path / prior_folder(level)
        if not self._has_weights(folder):
            have = self.prior_levels()
            raise JukeboxError(f"{self.path}: no prior for level {level} (levels present: {have or 'none'})")
        return check_sizes(PriorConfig.load_json(folder / "config.json"), str(folder / "config.json"))

    def load_prior(self, level: int, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> Prior:
        """Build the level's prior on the meta device and stream its weights in (one copy in memory)."""
        from ..prior import Prior

        config = self.prior_config(level)
        model = build_model(Prior, config, str(self.path / prior_folder(level) / "config.json"))
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # casts of stored fp16 weights: memory-bound, and a 2nd thread stalls on a busy CPU
        try:
            load_into(model, self.path / prior_folder(level), where=f"{self.path}/{prior_folder(level)}")
        finally:
            torch.set_num_threads(threads)
        model = model.to(device)
        if dtype is not None:
            model = model.to(dtype)
        return model.eval()

    def save_prior(self, model: Prior) -> None:
        save_component(self.path / prior_folder(model.config.level), model.config, model.state_dict())

    # ---------------------------------------------------------------- tempo
    def save_tempi(self, level: int, tempi: dict[str, Any]) -> None:
        """Store the typical tempi of a tempo prior: {"default": bpm, "genres": {genre: bpm}}."""
        data = {"format": TEMPI_FORMAT, "version": 1, "default": float(tempi["default"]),
                "genres": {str(g): float(v) for g, v in tempi["genres"].items()}}
        atomic_write_text(self.path / prior_folder(level) / TEMPI_FILE, json.dumps(data, indent=1) + "\n")

    def tempi(self, level: int) -> dict[str, Any] | None:
        """The typical tempi stored by :meth:`save_tempi` (None when the prior has none)."""
        path = self.path / prior_folder(level) / TEMPI_FILE
        if not path.is_file():
            return None
        try:
            data = read_json(path, "tempo table")
            ok = (data.get("format") == TEMPI_FORMAT and _bpm_ok(data.get("default"))
                  and isinstance(data.get("genres"), dict) and all(_bpm_ok(v) for v in data["genres"].values()))
        except (JukeboxError, AttributeError):
            ok = False
        if not ok:
            raise JukeboxError(f"{path}: damaged tempo table; retrain the prior with --tempo or delete the file")
        return {"default": float(data["default"]), "genres": {g: float(v) for g, v in data["genres"].items()}}


TEMPI_FILE = "tempi.json"
TEMPI_FORMAT = "jukebox.tempi"


def _bpm_ok(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and 1.0 <= v <= 1000.0


#: Sizes that must be positive in a model config (zero would divide by zero or build an empty model).
POSITIVE = frozenset({"sample_rate", "levels", "l_bins", "n_ctx", "width", "emb_width", "t_bins", "genre_bins",
                      "artist_bins"})


def check_sizes(config: Any, where: str) -> Any:
    """Refuse a (hand-edited or damaged) model config with negative numbers or zero sizes; return it."""
    import dataclasses

    def walk(obj: Any, path: str) -> None:
        if dataclasses.is_dataclass(obj):
            for f in dataclasses.fields(obj):
                walk(getattr(obj, f.name), f"{path}.{f.name}" if path else f.name)
        elif isinstance(obj, (list, tuple)):
            for i, v in enumerate(obj):
                walk(v, f"{path}[{i}]")
        elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
            name = path.rsplit(".", 1)[-1].split("[")[0]
            if obj < 0 or (obj == 0 and name in POSITIVE):
                raise JukeboxError(f"{where}: invalid {path} = {obj}; the config is damaged or was edited by hand")

    walk(config, "")
    levels = getattr(config, "levels", None)
    for name in ("downs_t", "strides_t", "multipliers"):  # one entry per level (hops are computed from them)
        value = getattr(config, name, None)
        if isinstance(levels, int) and isinstance(value, (list, tuple)) and len(value) != levels and (
                name != "multipliers" or value):
            raise JukeboxError(f"{where}: {name} has {len(value)} entries but levels is {levels}; the config is "
                               "damaged or was edited by hand")
    return config


#: What a model's constructor raises for a config it cannot build (heads that do not divide the width, zero
#: blocks, tuples of the wrong length, ...).
_BUILD_ERRORS = (ValueError, TypeError, ZeroDivisionError, IndexError, KeyError, AssertionError, OverflowError,
                 RuntimeError)


def build_model(cls: type, config: Any, where: str) -> Any:
    """``cls(config)`` built on the meta device (no memory: weights arrive later, streamed in after their shapes
    matched); a config the model cannot be built from is a one-line :class:`JukeboxError` naming ``where``."""
    try:
        with torch.device("meta"), _MetaBuild():
            return cls(config)
    except JukeboxError as e:
        raise JukeboxError(f"{where}: {e}") from None
    except _BUILD_ERRORS as e:
        why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
        raise JukeboxError(f"{where}: no model can be built from this config ({why}); the config is damaged or was "
                           "edited by hand") from None


def save_component(folder: Path, config: Any, state_dict: dict[str, torch.Tensor]) -> None:
    """Write a component's weights then its config (the config last, so a folder with a config is complete)."""
    save_weights(folder, state_dict)
    config.save_json(folder / "config.json")


def save_discriminator(folder: str | Path, disc: Discriminator) -> None:
    """Write ``folder/config.json`` (the :class:`~jukebox.vqvae.discriminator.AdversarialConfig`) and
    ``folder/model.safetensors`` of an adversarial training's discriminator."""
    save_component(Path(folder), disc.config, {k: v.detach().cpu() for k, v in disc.state_dict().items()})


def load_discriminator(folder: str | Path, device: str | torch.device = "cpu") -> Discriminator:
    """The discriminator saved in ``folder`` by :func:`save_discriminator` (strict load)."""
    from ..vqvae.discriminator import AdversarialConfig, Discriminator

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise JukeboxError(f"{folder}: no discriminator (config.json missing)")
    disc = Discriminator(AdversarialConfig.load_json(folder / "config.json"))
    load_into(disc, folder, where=str(folder))
    return disc.to(device)
