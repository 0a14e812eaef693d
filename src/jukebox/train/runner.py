"""High-level entry points behind ``jukebox train vqvae`` and ``jukebox train prior``.

Both run unchanged under ``torchrun`` (DDP over N processes) and in one process. Rank 0 scans the corpus,
builds the code cache and writes checkpoints; every rank trains on its own windows.
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..checkpoint.model_dir import ModelDir, prior_folder
from ..config import VQVAEConfig, vqvae_preset
from ..data.dataset import Manifest, WindowSampler, scan_corpus, split_manifest
from ..data.labels import LABELS_FILE, Labeller, LabelVocab, split_genre
from ..errors import JukeboxError, UsageError
from .config import TrainConfig
from .distributed import DistInfo, broadcast_object, cleanup_distributed, setup_distributed
from .loop import Trainer, TrainResult
from .options import TrainOptions
from .tasks import PriorTask, VQVAETask, estimate_bandwidth

LogFn = Callable[[str], None]

#: Default training window of the VQ-VAE, in samples, per preset (others: Jukebox's 262144).
VQVAE_WINDOWS = {"tiny": 8192, "openai": 262144}


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr)


def _on_rank0(dist: DistInfo, fn: Callable[[], Any]) -> Any:
    """Run ``fn`` on rank 0 and hand its result (or its error) to every rank."""
    result: Any = None
    error: str | None = None
    if dist.is_main:
        try:
            result = fn()
        except JukeboxError as e:
            error = str(e)
            if not dist.distributed:
                raise
    result, error = broadcast_object((result, error), dist)  # type: ignore[misc]
    if error is not None:
        raise JukeboxError(error)
    return result


def load_corpus(data: str | Path, sample_rate: int, val_fraction: float = 0.1, seed: int = 0,
                log: LogFn = _stderr) -> Manifest:
    """A manifest for ``data``: a manifest JSON written by ``jukebox prepare -o``, or a folder (scanned now).

    Tracks without a split are assigned one (``val_fraction`` of them to validation, by track).
    """
    from ..data.code_cache import is_code_folder

    path = Path(data)
    if path.is_dir() and is_code_folder(path):
        raise JukeboxError(f"{data} is a code folder (made by `jukebox prepare --codes`); only `jukebox train "
                           "prior` trains from codes, this needs the audio")
    if path.is_file() and path.suffix.lower() == ".json":
        manifest = Manifest.load(path)
    else:
        manifest = scan_corpus(path, sample_rate=sample_rate, min_seconds=0.0)
        if manifest.skipped:
            log(f"note: {len(manifest.skipped)} files skipped (run `jukebox prepare --data {data}` for the "
                f"reasons); first: {manifest.skipped[0].path}: {manifest.skipped[0].reason}")
    if not manifest.tracks:
        raise JukeboxError(f"{data}: no readable audio files to train on")
    if any(t.split is None for t in manifest.tracks):
        manifest = split_manifest(manifest, val_fraction=val_fraction, seed=seed)
    return dataclasses.replace(manifest, sample_rate=sample_rate)


def load_code_folder(data: str | Path, vqvae_folder: str | Path, level: int, top_level: int,
                     val_fraction: float = 0.1, seed: int = 0) -> tuple[Manifest, Any]:
    """The manifest and opened cache of the portable code folder ``data`` for training the level-``level`` prior.

    One-line errors when the codes were made by another VQ-VAE than ``vqvae_folder``'s or lack the level(s)
    the prior needs (level ``level``; upsamplers also ``level + 1``). Tracks without a split get one.
    """
    from ..data.code_cache import CodeCache, vqvae_fingerprint

    cache = CodeCache(data)
    if cache.fingerprint != vqvae_fingerprint(vqvae_folder):
        raise JukeboxError(f"{data}: codes were made by another VQ-VAE; re-encode with jukebox prepare --codes")
    cache.require_levels(level, *((level + 1,) if level < top_level else ()))
    manifest = cache.manifest()
    if not manifest.tracks:
        raise JukeboxError(f"{data}: the code folder holds no tracks")
    if any(t.split is None for t in manifest.tracks):
        manifest = split_manifest(manifest, val_fraction=val_fraction, seed=seed)
    return dataclasses.replace(manifest, sample_rate=cache.sample_rate), cache


def _writer_dir(log_dir: str | Path | None, default: Path) -> Path | None:
    if log_dir is not None:
        return None if str(log_dir).lower() == "none" else Path(log_dir)
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        return None
    return default


# ---------------------------------------------------------------------------------------------------- VQ-VAE


def train_vqvae(data: str | Path, out: str | Path, preset: str = "tiny", config: TrainConfig | None = None,
                window: int | None = None, resume: bool = False, restart: bool = False,
                device: str | torch.device | None = None, log_dir: str | Path | None = None, progress: bool = True,
                val_fraction: float = 0.1, vqvae_config: VQVAEConfig | None = None, record_batches: bool = False,
                stop_at: int | None = None, log: LogFn = _stderr, adversarial: Any = None) -> TrainResult:
    """Train (or continue, or fine-tune) the VQ-VAE of model directory ``out`` on the corpus ``data``.

    A new directory gets the ``preset`` VQ-VAE with loss normalisers measured on the corpus. An existing VQ-VAE
    is fine-tuned from its weights (``restart``: start over from the preset) or, with ``resume``, continued
    from its training checkpoint exactly. ``window``: training window in samples (a multiple of the top hop).
    ``adversarial``: a :class:`~jukebox.vqvae.discriminator.AdversarialConfig` to train with discriminators
    (saved in ``out/discriminator/``); with its ``decoder_only`` only the decoders of an existing VQ-VAE train.
    """
    config = config or TrainConfig()
    dist = setup_distributed(device)
    try:
        def create() -> None:
            ModelDir(out, create=True)

        _on_rank0(dist, create)
        md = ModelDir(out)
        folder = md.path / "vqvae"
        ckpt = folder / "checkpoint"
        if resume:
            from .state import read_checkpoint_extra

            extra = _on_rank0(dist, lambda: read_checkpoint_extra(ckpt))
            cfg = VQVAEConfig.from_dict(extra["model_config"], f"{ckpt}: model_config")
            window = int(extra.get("window", window or 0)) or window
            if extra.get("adversarial") is not None:
                from ..vqvae.discriminator import AdversarialConfig

                adversarial = AdversarialConfig.from_dict(extra["adversarial"], f"{ckpt}: adversarial")
            else:
                adversarial = None
        elif md.has_vqvae() and not restart:
            cfg = md.vqvae_config()
            if dist.is_main:
                log(f"fine-tuning the VQ-VAE of {md.path} (pass --restart to start from the preset)")
        else:
            cfg = vqvae_config or vqvae_preset(preset)
            if adversarial is not None and adversarial.decoder_only:
                raise UsageError("--decoder-only fine-tunes the decoders of an existing VQ-VAE; "
                                 f"{md.path} has none (or --restart was given)")
        top = cfg.hop_lengths[-1]
        window = int(window or VQVAE_WINDOWS.get(preset, 262144))
        if window <= 0 or window % top:
            raise UsageError(f"--window must be a positive multiple of the top hop length {top}, got {window}")
        manifest = _on_rank0(dist, lambda: load_corpus(data, cfg.sample_rate, val_fraction, config.seed, log))
        train = WindowSampler(manifest, cfg.sample_rate, window, split="train")
        try:
            val = WindowSampler(manifest, cfg.sample_rate, window, split="validation")
        except JukeboxError:
            val = None
        if not resume and not (md.has_vqvae() and not restart):
            bw = estimate_bandwidth(train, cfg, seed=config.seed)
            cfg = cfg.replace(bandwidth_l1=bw["l1"], bandwidth_l2=bw["l2"], bandwidth_spec=bw["spec"])
        from ..vqvae import VQVAE

        torch.manual_seed(config.seed)
        if not resume and md.has_vqvae() and not restart:
            model = md.load_vqvae("cpu").train()
            if adversarial is None or not adversarial.decoder_only:
                model.restore_codebook_ema(window * config.batch_size, dist.world_size)
        else:
            model = VQVAE(cfg).train()
        extra_state = {"model_config": model.config.to_dict(), "window": window, "preset": preset}
        task: VQVAETask
        if adversarial is not None:
            from ..vqvae.discriminator import Discriminator
            from .adversarial import AdversarialVQVAETask, GeneratorVQVAE, freeze_for_decoder_only

            levels = adversarial.trained_levels(model.levels)
            if adversarial.decoder_only:
                n = freeze_for_decoder_only(model, levels)
                if dist.is_main:
                    log(f"decoder-only: training the level {list(levels)} decoders ({n / 1e6:.2f}M parameters); "
                        "encoders and codebooks frozen, codes unchanged")
            disc = Discriminator(adversarial) if adversarial.adv_weight > 0 or adversarial.feat_weight > 0 else None
            model = GeneratorVQVAE(model, levels, adversarial.decoder_only)
            task = AdversarialVQVAETask(train, val, config.batch_size, adversarial, disc, cfg.sample_rate,
                                        config.seed, config.val_batches, export=md.save_vqvae,
                                        export_discriminator=str(md.path / "discriminator"))
            extra_state["adversarial"] = adversarial.to_dict()
            if dist.is_main and disc is not None:
                log(f"adversarial training: {'+'.join(adversarial.discriminators)} discriminators "
                    f"({sum(p.numel() for p in disc.parameters()) / 1e6:.2f}M parameters), {adversarial.loss} loss")
        else:
            task = VQVAETask(train, val, config.batch_size, config.seed, config.val_batches, export=md.save_vqvae)
        if dist.is_main:
            log(f"training the VQ-VAE on {len(train.tracks)} tracks ({train.dropped} shorter than the window "
                f"left out), window {window} samples, {dist.world_size} process(es) on {dist.device}")
        trainer = Trainer(model, task, config, ckpt, dist, _writer_dir(log_dir, md.path / "logs" / "vqvae"),
                          progress=progress and dist.is_main, record_batches=record_batches, log=log,
                          extra_state=extra_state)
        return trainer.fit(resume=resume, stop_at=stop_at)
    finally:
        cleanup_distributed(dist)


# ---------------------------------------------------------------------------------------------------- priors


def _default_prior_preset(vq: VQVAEConfig, level: int) -> str:
    if vq.l_bins <= 64:
        return "tiny_top" if level == vq.levels - 1 else "tiny_upsampler"
    raise UsageError("--preset is needed for a new prior (e.g. 1b_lyrics or 5b for the top level, "
                     "upsampler_level_1 / upsampler_level_0 for the upsamplers)")


def _label_version(config: Any) -> str:
    return "v3" if config.labels is not None and config.labels.version == 3 else "v2"


def new_prior_config(preset: str, vq: VQVAEConfig, level: int, manifest: Manifest, n_ctx: int | None = None
                     ) -> tuple[Any, LabelVocab | None]:
    """A prior config from ``preset`` fitted to the VQ-VAE, the level and the corpus, plus its vocabulary."""
    from ..prior.config import prior_preset

    p = prior_preset(preset)
    top = level == vq.levels - 1
    if not 0 <= level < vq.levels:
        raise UsageError(f"--level must be in 0..{vq.levels - 1} for this VQ-VAE, got {level}")
    if top != (p.level == p.levels - 1):
        kind = "a top-level" if top else "an upsampler"
        raise UsageError(f"level {level} needs {kind} prior preset; {preset!r} is not one")
    cfg = p.replace(level=level, l_bins=vq.l_bins, levels=vq.levels, downs_t=vq.downs_t, strides_t=vq.strides_t,
                    n_ctx=n_ctx or p.n_ctx)
    vocab = None
    if cfg.labels is not None:
        version = _label_version(cfg)
        tracks = manifest.tracks
        vocab = LabelVocab.from_names([t.artist for t in tracks], [t.genre for t in tracks], version=version)
        words = max((len(split_genre(t.genre, version)) for t in tracks), default=1)
        labels = cfg.labels.replace(sample_rate=vq.sample_rate, genre_bins=max(cfg.labels.genre_bins, vocab.y_bins[0]),
                                    artist_bins=max(cfg.labels.artist_bins, vocab.y_bins[1]),
                                    max_bow_genre_size=max(cfg.labels.max_bow_genre_size, words))
        if top and labels.min_duration is not None and labels.max_duration is not None:
            longest = max(t.duration for t in tracks)
            shortest = min(t.duration for t in tracks)
            labels = labels.replace(min_duration=min(labels.min_duration, shortest),
                                    max_duration=max(labels.max_duration, longest))
        cfg = cfg.replace(labels=labels)
    return cfg, vocab


def with_labels_every_position(model: torch.nn.Module) -> tuple[torch.nn.Module, Any]:
    """A copy of the prior ``model`` whose config has ``labels.every_position``, its weights kept and the new
    label projection at zero (same outputs as ``model``). Returns (prior, config)."""
    from ..prior import Prior

    cfg = model.config
    new_cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, every_position=True))
    new = Prior(new_cfg).to(next(model.parameters()).device)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith("label_conditioner.label_proj.") for k in missing):
        raise JukeboxError(f"cannot add every-position labels: missing {missing}, unexpected {unexpected}")
    return new.train(model.training), new_cfg


def with_tempo(model: torch.nn.Module) -> tuple[torch.nn.Module, Any]:
    """A copy of the top-level prior ``model`` whose config has ``labels.tempo``, its weights kept and the new
    tempo and beat-phase embeddings at zero (same outputs as ``model`` for any tempo). Returns (prior, config)."""
    from ..prior import Prior

    cfg = model.config
    if cfg.labels is None or cfg.is_upsampler:
        raise UsageError("--tempo: only a top-level prior with labels takes tempo conditioning")
    new_cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, tempo=True))
    new = Prior(new_cfg).to(next(model.parameters()).device)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    allowed = ("label_conditioner.tempo_emb.", "label_conditioner.phase_emb.")
    if unexpected or any(not k.startswith(allowed) for k in missing):
        raise JukeboxError(f"cannot add tempo conditioning: missing {missing}, unexpected {unexpected}")
    return new.train(model.training), new_cfg


def genre_tempi(manifest: Manifest, beats: Mapping[str, Any]) -> dict[str, Any]:
    """The typical tempo of each genre of the training split (median BPM of its tracks with a steady pulse) and of
    all of them (``default``): what sampling uses when no tempo is asked for."""
    by_genre: dict[str, list[float]] = {}
    for t in manifest.split("train") or manifest.tracks:
        b = beats.get(t.path)
        if b is not None and float(b.bpm) > 0:
            by_genre.setdefault(t.genre, []).append(float(b.bpm))
    every = [v for vs in by_genre.values() for v in vs]
    return {"default": round(float(np.median(every)), 1) if every else 120.0,
            "genres": {g: round(float(np.median(vs)), 1) for g, vs in sorted(by_genre.items())}}


def _corpus_beats(data: str | Path, cache: Any, manifest: Manifest, log: LogFn) -> dict[str, Any]:
    """Each track's beats for tempo labels: the code folder's ``tempo.json``, or (audio folders) tracked once and
    stored in the code cache."""
    from ..audio import load_audio
    from ..data.code_cache import is_code_folder
    from ..data.tempo import load_beats, save_beats, track_beats

    beats = load_beats(cache.root) or {}
    missing = [t for t in manifest.tracks if t.path not in beats]
    if missing and Path(data).is_dir() and is_code_folder(data):
        if not beats:
            raise UsageError(f"{data}: the code folder has no beats (tempo.json); add them with `jukebox prepare "
                             f"--data MUSIC_DIR --codes {data} --beats-only`")
        log(f"{len(missing)} tracks have no beats in {data}; they are labelled as having no steady pulse")
    elif missing:
        log(f"tracking the beats of {len(missing)} tracks")
        for t in missing:
            audio, _ = load_audio(manifest.track_path(t), sample_rate=cache.sample_rate)
            beats[t.path] = track_beats(audio, cache.sample_rate)
        save_beats(cache.root, beats)
    return beats


def _stored_options(extra: dict[str, Any], where: Path) -> TrainOptions:
    """The options a checkpoint's run was started with (older checkpoints: their preset and LoRA settings)."""
    if extra.get("options") is not None:
        return TrainOptions.from_dict(extra["options"], f"{where}: options")
    lora = extra.get("lora") or {}
    return TrainOptions(preset=extra.get("preset"), lora_rank=int(lora.get("rank", 0)),
                        lora_alpha=float(lora["alpha"]) if lora.get("alpha") is not None else None)


def _set_activation_checkpointing(model: torch.nn.Module, on: bool) -> None:
    from ..nn.transformer import Transformer

    for m in model.modules():
        if isinstance(m, Transformer):
            m.checkpoint = on


def train_prior(model_dir: str | Path, data: str | Path, level: int, preset: str | None = None,
                config: TrainConfig | None = None, resume: bool = False, restart: bool = False, *,
                options: TrainOptions | None = None, cache_dir: str | Path | None = None, rebuild_cache: bool = False,
                device: str | torch.device | None = None, log_dir: str | Path | None = None, progress: bool = True,
                record_batches: bool = False, stop_at: int | None = None, log: LogFn = _stderr,
                **option_overrides: Any) -> TrainResult:
    """Add or continue the level-``level`` prior of ``model_dir``, trained on ``data`` through the code cache.

    What the training does beyond ``config`` is one :class:`~jukebox.train.options.TrainOptions`: ``options``
    with ``option_overrides`` by name on top (``preset`` too); a resumed run starts from the options stored in its
    checkpoint instead of the defaults, so only what a call gives changes.

    New prior: from ``preset`` (vocabulary from the corpus, saved as ``prior_level_L/labels.json``). Existing
    prior: fine-tuned from its weights, its vocabulary extended with the corpus's new artists and genres
    (``restart``: start over from the preset). ``resume``: continue the training checkpoint exactly.
    ``lora_rank`` > 0 trains LoRA adapters only (saved in ``prior_level_L/lora/``; ``merge_lora`` folds them
    into the prior's weights at the end). ``data`` may be a portable code folder (``jukebox prepare --codes``):
    then no audio is read and ``cache_dir`` / ``rebuild_cache`` do not apply. ``label_dropout`` p: each training
    item's artist and genre are replaced by ``unknown`` with probability p (for classifier-free guidance when
    sampling). ``labels_every_position``: give the prior :attr:`LabelConfig.every_position` (an existing prior is
    upgraded in place: the new projection starts at zero, so its output is unchanged until it trains).
    ``input_noise`` p: the decoder reads each training code replaced by a random one with probability p while the
    targets stay real, so the prior learns to recover after a wrong token (validation reads clean codes).
    ``scheduled_sampling`` p: the same with the prior's own guesses instead of random codes (one extra
    teacher-forced pass without gradients per step draws each position's guess from the real prefix).
    ``tempo``: give the top-level prior :attr:`LabelConfig.tempo` (an existing prior is upgraded in place, its new
    embeddings at zero): every window is labelled with the beat grid fitted to its beats, read from the code
    folder's ``tempo.json`` (``jukebox prepare``) or tracked once into the code cache for an audio folder; the
    genres' typical tempi are saved beside the prior for sampling without an asked tempo.
    """
    from ..data.code_cache import CodeCache, CodeWindowSampler, ensure_code_cache, is_code_folder
    from ..prior import Prior
    from ..prior.config import PriorConfig
    from ..prior.lora import apply_lora, load_lora, mark_only_lora_trainable, save_lora
    from ..prior.lora import merge_lora as merge
    from .finetune import extend_prior_labels, extend_vocab

    config = config or TrainConfig()
    if preset is not None:
        option_overrides["preset"] = preset
    o = TrainOptions.of(options, **option_overrides)  # checked here; a resumed run starts from its own below
    dist = setup_distributed(device)
    try:
        md = ModelDir(model_dir)
        vq = md.vqvae_config()
        if not 0 <= level < vq.levels:
            raise UsageError(f"--level must be in 0..{vq.levels - 1} for this VQ-VAE, got {level}")
        folder = md.path / prior_folder(level)
        ckpt = folder / "checkpoint"
        extra: dict[str, Any] = {}
        if resume:
            from .state import read_checkpoint_extra

            extra = _on_rank0(dist, lambda: read_checkpoint_extra(ckpt))
            o = TrainOptions.of(options if options is not None else _stored_options(extra, ckpt), **option_overrides)
        if Path(data).is_dir() and is_code_folder(data):
            if cache_dir is not None or rebuild_cache:
                raise UsageError(f"{data} is a code folder: --cache and --rebuild-cache apply to audio folders only")
            manifest = _on_rank0(dist, lambda: load_code_folder(data, md.path / "vqvae", level, vq.levels - 1,
                                                                o.val_fraction, config.seed)[0])
            cache = CodeCache(data)
            if cache.sample_rate != vq.sample_rate or cache.hop_lengths != tuple(vq.hop_lengths):
                raise JukeboxError(f"{data}: codes were made by another VQ-VAE; re-encode with jukebox prepare --codes")
            if dist.is_main:
                log(f"training from the code folder {data} ({len(manifest.tracks)} tracks, levels "
                    f"{', '.join(map(str, cache.present))}; no audio needed)")
        else:
            manifest = _on_rank0(dist, lambda: load_corpus(data, vq.sample_rate, o.val_fraction, config.seed, log))
            key = hashlib.sha1(str(Path(manifest.root).resolve()).encode()).hexdigest()[:12]
            cache_root = Path(cache_dir) if cache_dir is not None else md.path / "code_cache" / key

            def build_cache() -> None:
                vqvae = md.load_vqvae(dist.device)
                ensure_code_cache(manifest, vqvae, md.path / "vqvae", cache_root, rebuild=rebuild_cache, log=log)

            _on_rank0(dist, build_cache)
            cache = CodeCache(cache_root)

        exists = level in md.prior_levels()
        lora_info: dict[str, Any] | None = None
        trainable_extra: tuple[str, ...] = ()
        if resume:
            cfg = PriorConfig.from_dict(extra["model_config"], f"{ckpt}: model_config")
            vocab = LabelVocab.from_dict(extra["labels"]) if extra.get("labels") else None
            torch.manual_seed(config.seed)
            model = Prior(cfg)
            lora_info = extra.get("lora")
            if lora_info:
                apply_lora(model, int(lora_info["rank"]), float(lora_info["alpha"]), targets=lora_info["modules"])
                trainable_extra = tuple(lora_info.get("also", ()))
                mark_only_lora_trainable(model, also=trainable_extra)
        elif exists and not restart:
            model = md.load_prior(level, "cpu").train()
            cfg = model.config
            vocab = None
            if cfg.labels is not None:
                old = LabelVocab.load(folder) if (folder / LABELS_FILE).exists() else (
                    LabelVocab.load(md.path) if (md.path / LABELS_FILE).exists() else None)
                if old is None:
                    raise JukeboxError(f"{folder}: the prior has labels but no {LABELS_FILE}")
                vocab, new_a, new_g = extend_vocab(old, [t.artist for t in manifest.tracks],
                                                   [t.genre for t in manifest.tracks])
                if new_a or new_g:
                    model = extend_prior_labels(model, old, vocab, new_a, new_g)
                    cfg = model.config
                    if dist.is_main:
                        log(f"extended the vocabulary with {len(new_a)} artists and {len(new_g)} genres "
                            "(new embeddings start at the mean of the known ones)")
                        md.save_prior(model)
                        vocab.save(folder)
                    if o.lora_rank:
                        trainable_extra = ("label_conditioner.artist_emb", "label_conditioner.genre_emb")
            if dist.is_main:
                log(f"fine-tuning the level-{level} prior of {md.path} (pass --restart to start from the preset)")
        else:
            cfg, vocab = new_prior_config(o.preset or _default_prior_preset(vq, level), vq, level, manifest, o.n_ctx)
            torch.manual_seed(config.seed)
            model = Prior(cfg)
        if o.labels_every_position and not resume:
            if cfg.labels is None:
                raise UsageError(f"--labels-every-position: the level-{level} prior has no labels")
            if not cfg.labels.every_position:
                model, cfg = with_labels_every_position(model)
                if dist.is_main:
                    log("artist/genre labels now reach every position (zero-initialised projection)")
        if o.tempo and not resume and not (cfg.labels is not None and cfg.labels.tempo):
            model, cfg = with_tempo(model)
            if dist.is_main:
                log("the prior now takes a tempo and beat phase (zero-initialised embeddings)")
        beats = None
        if cfg.labels is not None and cfg.labels.tempo:
            beats = _on_rank0(dist, lambda: _corpus_beats(data, cache, manifest, log))
        if cfg.l_bins != vq.l_bins or cfg.hop_lengths != vq.hop_lengths:
            raise JukeboxError(f"the level-{level} prior was made for another VQ-VAE")
        if o.lora_rank and not resume:
            modules = apply_lora(model, o.lora_rank, o.lora_alpha)
            n = mark_only_lora_trainable(model, also=trainable_extra)
            lora_info = {"rank": o.lora_rank, "alpha": float(o.lora_rank if o.lora_alpha is None else o.lora_alpha),
                         "modules": modules, "also": list(trainable_extra)}
            if dist.is_main:
                log(f"LoRA rank {o.lora_rank} on {len(modules)} linears: {n} trainable parameters")
        if o.checkpoint_activations is not None:
            _set_activation_checkpointing(model, o.checkpoint_activations)
        if cfg.labels is not None and vocab is not None:
            version = _label_version(cfg)
            for t in manifest.tracks:
                if len(split_genre(t.genre, version)) > cfg.labels.max_bow_genre_size:
                    raise JukeboxError(f"{t.path}: genre {t.genre!r} has more words than this prior takes "
                                       f"({cfg.labels.max_bow_genre_size}); shorten it in the metadata")
        labeller = (Labeller(vocab, cfg.labels.max_bow_genre_size, cfg.lyrics.n_tokens, cfg.sample_length,
                             tempo=cfg.labels.tempo)
                    if cfg.labels is not None and vocab is not None else None)
        if cfg.labels is not None and labeller is None:
            raise JukeboxError(f"{folder}: the prior needs labels but no vocabulary was found")
        down = cfg.cond_downsample
        train = CodeWindowSampler(cache, manifest, level, cfg.n_ctx, "train", down, beats=beats)
        try:
            val = CodeWindowSampler(cache, manifest, level, cfg.n_ctx, "validation", down, beats=beats)
        except JukeboxError:
            val = None

        def export(m: torch.nn.Module) -> None:
            if lora_info:
                save_lora(m, folder / "lora", extra={"labels": vocab.to_dict() if vocab else None},
                          include=trainable_extra)
                if vocab is not None:
                    vocab.save(folder / "lora")
                return
            md.save_prior(m)
            if vocab is not None:
                vocab.save(folder)
            if beats is not None:
                md.save_tempi(level, genre_tempi(manifest, beats))

        writer_dir = _writer_dir(log_dir, md.path / "logs" / prior_folder(level))
        media_vqvae = md.load_vqvae("cpu") if writer_dir is not None and dist.is_main else None
        if o.label_dropout and labeller is None:
            raise UsageError(f"--label-dropout: the level-{level} prior has no labels")
        if (o.input_noise or o.scheduled_sampling) and cfg.lyrics.style == "merged":
            raise UsageError("--input-noise / --scheduled-sampling: a lyric-merged (1b-style) prior reads lyrics and "
                             "codes as one sequence; train it without them")
        task = PriorTask(level, train, val, labeller, config.batch_size, config.seed, config.val_batches,
                         export=export, vqvae=media_vqvae, l_bins=cfg.l_bins, options=o)
        if dist.is_main:
            n_params = sum(p.numel() for p in model.parameters())
            log(f"training the level-{level} prior ({n_params / 1e6:.2f}M parameters, n_ctx {cfg.n_ctx}) on "
                f"{len(train.tracks)} tracks ({train.dropped} too short), {dist.world_size} process(es) on "
                f"{dist.device}")
        extra_state = {"model_config": cfg.to_dict(), "labels": vocab.to_dict() if vocab else None,
                       "lora": lora_info, "preset": o.preset, "options": o.to_dict()}
        trainer = Trainer(model, task, config, ckpt, dist, writer_dir, progress=progress and dist.is_main,
                          record_batches=record_batches, log=log, extra_state=extra_state,
                          data_state=o.data_state())
        result = trainer.fit(resume=resume, stop_at=stop_at)
        if o.merge_lora and lora_info and dist.is_main and result.step >= config.steps:
            merged = copy.deepcopy(model).cpu()
            load_lora(merged, folder / "lora")  # the exported adapters (EMA-averaged when --ema is on)
            merge(merged)
            for p in merged.parameters():
                p.requires_grad = True
            md.save_prior(merged)
            if vocab is not None:
                vocab.save(folder)
            log(f"merged the LoRA adapters into {folder}")
        return result
    finally:
        cleanup_distributed(dist)
