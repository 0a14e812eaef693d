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
from ..prior import Prior
from .config import TrainConfig
from .distributed import DistInfo, broadcast_object, cleanup_distributed, setup_distributed
from .loop import Trainer, TrainResult
from .options import TrainOptions
from .tasks import PriorTask, VQVAETask, alignment_site, estimate_bandwidth

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
    from ..data.code_cache import CodeCache, made_by

    cache = CodeCache(data)
    if not made_by(cache.fingerprint, vqvae_folder):
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
    if config.fsdp:
        raise UsageError("--fsdp shards the priors only; train the VQ-VAE without it (DDP under torchrun)")
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


def _with_label_option(model: torch.nn.Module, what: str, new_params: tuple[str, ...],
                       **changes: Any) -> tuple[torch.nn.Module, Any]:
    """A copy of the prior ``model`` with its ``labels`` config changed by ``changes``, its weights kept: the only
    weights the copy adds are the zero-initialised ``new_params`` (prefixes), so its outputs equal ``model``'s."""
    cfg = model.config
    new_cfg = dataclasses.replace(cfg, labels=dataclasses.replace(cfg.labels, **changes))
    new = Prior(new_cfg).to(next(model.parameters()).device)
    missing, unexpected = new.load_state_dict(model.state_dict(), strict=False)
    if unexpected or any(not k.startswith(new_params) for k in missing):
        raise JukeboxError(f"cannot add {what}: missing {missing}, unexpected {unexpected}")
    return new.train(model.training), new_cfg


def with_labels_every_position(model: torch.nn.Module) -> tuple[torch.nn.Module, Any]:
    """A copy of the prior ``model`` whose config has ``labels.every_position``, its weights kept and the new
    label projection at zero (same outputs as ``model``). Returns (prior, config)."""
    return _with_label_option(model, "every-position labels", ("label_conditioner.label_proj.",),
                              every_position=True)


def with_tempo(model: torch.nn.Module) -> tuple[torch.nn.Module, Any]:
    """A copy of the top-level prior ``model`` whose config has ``labels.tempo``, its weights kept and the new
    tempo and beat-phase embeddings at zero (same outputs as ``model`` for any tempo). Returns (prior, config)."""
    if model.config.labels is None or model.config.is_upsampler:
        raise UsageError("--tempo: only a top-level prior with labels takes tempo conditioning")
    return _with_label_option(model, "tempo conditioning",
                              ("label_conditioner.tempo_emb.", "label_conditioner.phase_emb."), tempo=True)


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


def without_weak_pulse(beats: Mapping[str, Any], min_pulse: float) -> dict[str, Any]:
    """``beats`` ({track path: BeatTrack}) with each track whose pulse clarity is below ``min_pulse`` replaced by
    a track without a steady pulse (no beats, bpm 0, its pulse clarity kept): the label such tracks train with."""
    from ..data.tempo import BeatTrack

    return {path: b if float(b.pulse) >= min_pulse else BeatTrack(0.0, np.zeros(0), float(b.pulse))
            for path, b in beats.items()}


def _refuse_min_pulse(level: int) -> None:
    raise UsageError(f"--min-pulse filters tempo labels, but the level-{level} prior has none: add --tempo")


def _corpus_beats(data: str | Path, cache: Any, manifest: Manifest, log: LogFn) -> dict[str, Any]:
    """Each track's beats for tempo labels: the code folder's ``tempo.json``, or (audio folders) tracked once and
    stored in the code cache."""
    from ..data.code_cache import is_code_folder
    from ..data.tempo import load_beats, save_beats, track_files

    beats = load_beats(cache.root) or {}
    missing = [t for t in manifest.tracks if t.path not in beats]
    if missing and Path(data).is_dir() and is_code_folder(data):
        if not beats:
            raise UsageError(f"{data}: the code folder has no beats (tempo.json); add them with `jukebox prepare "
                             f"--data MUSIC_DIR --codes {data} --beats-only`")
        log(f"{len(missing)} tracks have no beats in {data}; they are labelled as having no steady pulse")
    elif missing:
        log(f"tracking the beats of {len(missing)} tracks")
        found, failed = track_files(((t.path, manifest.track_path(t)) for t in missing), cache.sample_rate)
        if failed:
            path, why = next(iter(failed.items()))
            raise JukeboxError(why if path in why else f"{path}: {why}")
        beats.update(found)
        save_beats(cache.root, beats)
    return beats


def _stored_options(extra: dict[str, Any], where: Path) -> TrainOptions:
    """The options a checkpoint's run was started with (older checkpoints: their preset and LoRA settings)."""
    if extra.get("options") is not None:
        return TrainOptions.from_dict(extra["options"], f"{where}: options")
    lora = extra.get("lora") or {}
    return TrainOptions(preset=extra.get("preset"), lora_rank=int(lora.get("rank", 0)),
                        lora_alpha=float(lora["alpha"]) if lora.get("alpha") is not None else None)


def _check_fsdp(config: TrainConfig, o: TrainOptions) -> None:
    """One-line refusals of what ``--fsdp`` does not combine with."""
    if o.lora_rank or o.merge_lora:
        raise UsageError("--fsdp trains the whole prior; LoRA adapters (--lora-rank) train on one GPU: drop one")
    if config.compile != "none":
        raise UsageError("--fsdp runs the blocks eagerly; drop --compile (or train without --fsdp)")
    if o.align_loss:
        raise UsageError("--align-loss reads a cross-attention layer outside its sharded block: train it without "
                         "--fsdp")


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
                init_from: str | Path | None = None, **option_overrides: Any) -> TrainResult:
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
    genres' typical tempi are saved beside the prior for sampling without an asked tempo. ``min_pulse`` X (with
    tempo labels): tracks whose pulse clarity is below X train with the "no steady pulse" label (their codes and
    other labels as before), so that a tempo label means a clear pulse; the typical tempi then come from the
    clearly pulsed tracks.
    ``init_from``: another model directory whose lyric-free top prior of this level the new lyric prior (``preset``
    a lyric preset) is grown from (:mod:`jukebox.train.grow`): its config is the base's with the preset's lyric
    settings, its weights start as the base's, and the base's labels.json and tempi come with it; ``model_dir`` is
    created as a copy of the base's (VQ-VAE and other priors) when it does not exist yet.
    """
    config = config or TrainConfig()
    if preset is not None:
        option_overrides["preset"] = preset
    o = TrainOptions.of(options, **option_overrides)  # checked here; a resumed run starts from its own below
    if config.fsdp:
        _check_fsdp(config, o)
    dist = setup_distributed(device)
    try:
        if config.fsdp:
            from .fsdp import ensure_process_group

            dist = ensure_process_group(dist)
        if init_from is not None:
            _check_init_from(model_dir, init_from, resume, o.preset)
            _on_rank0(dist, lambda: _model_dir_like(init_from, model_dir, level))
        md = ModelDir(model_dir)
        vq = md.vqvae_config()
        if not 0 <= level < vq.levels:
            raise UsageError(f"--level must be in 0..{vq.levels - 1} for this VQ-VAE, got {level}")
        if o.min_pulse and not (o.tempo or resume or init_from is not None) and (
                restart or level not in md.prior_levels()):
            _refuse_min_pulse(level)  # a new prior without tempo labels: refused before any encoding
        run = _PriorRun(md, level, vq, dist, config, o, log)
        if resume:
            from .state import read_checkpoint_extra

            run.extra = _on_rank0(dist, lambda: read_checkpoint_extra(run.ckpt))
            run.o = TrainOptions.of(options if options is not None else _stored_options(run.extra, run.ckpt),
                                    **option_overrides)
            if config.fsdp:
                _check_fsdp(config, run.o)
        run.load_data(data, cache_dir, rebuild_cache)
        if init_from is not None:
            run.grow_from(ModelDir(init_from), restart)
        run.build_model(resume, restart)
        task = run.task(data, log_dir)
        trainer_cls = Trainer
        if config.fsdp:
            from .fsdp import FSDPTrainer

            trainer_cls = FSDPTrainer
        trainer = trainer_cls(run.model, task, config, run.ckpt, dist, run.writer_dir,
                              progress=progress and dist.is_main, record_batches=record_batches, log=log,
                              extra_state=run.extra_state(), data_state=run.o.data_state())
        result = trainer.fit(resume=resume, stop_at=stop_at)
        if run.o.merge_lora and run.lora_info and dist.is_main and result.step >= config.steps:
            run.merge_lora()
        return result
    finally:
        cleanup_distributed(dist)


def _check_init_from(model_dir: str | Path, init_from: str | Path, resume: bool, preset: str | None) -> None:
    from ..prior.config import prior_preset

    if preset is None or prior_preset(preset).lyrics.style == "none":
        raise UsageError("--init-from grows a lyric prior: give --preset a lyric preset such as default_lyrics "
                         "(encoder-decoder) or default_merged (lyrics and codes in one sequence)")
    if resume:
        raise UsageError("--init-from starts a new prior; --resume continues its training checkpoint: drop one")
    if Path(model_dir).resolve() == Path(init_from).resolve():
        raise UsageError("--init-from must name another model directory than --model: the grown prior goes into a "
                         "new --model folder (made as a copy of the base's)")
    if not Path(init_from).is_dir():
        raise UsageError(f"--init-from {init_from}: model directory not found")


def _model_dir_like(base_dir: str | Path, out: str | Path, level: int) -> None:
    """Make ``out`` (when it is not a model directory yet) a model directory with ``base_dir``'s VQ-VAE, root
    labels.json and priors other than level ``level``, without their training checkpoints, logs or adapters."""
    import shutil

    out, base = Path(out), ModelDir(base_dir)
    if (out / "model.json").exists():
        return
    if not base.has_vqvae():
        raise UsageError(f"--init-from {base_dir}: the model directory has no VQ-VAE")
    md = ModelDir(out, create=True)
    skip = shutil.ignore_patterns("checkpoint", "checkpoint.old", "lora", "logs", "code_cache")
    for name in ["vqvae", *(prior_folder(lvl) for lvl in base.prior_levels() if lvl != level)]:
        shutil.copytree(base.path / name, md.path / name, ignore=skip, dirs_exist_ok=True)
    if (base.path / LABELS_FILE).is_file():
        shutil.copy2(base.path / LABELS_FILE, md.path / LABELS_FILE)


class _PriorRun:
    """The stages of :func:`train_prior`: the corpus and its codes (:meth:`load_data`), the prior to train
    (:meth:`build_model`: resumed, fine-tuned or new, then upgraded and adapted as the options ask), its task
    (:meth:`task`) and, after training, the LoRA merge (:meth:`merge_lora`)."""

    def __init__(self, md: ModelDir, level: int, vq: VQVAEConfig, dist: DistInfo, config: TrainConfig,
                 options: TrainOptions, log: LogFn) -> None:
        self.md, self.level, self.vq, self.dist, self.config, self.o, self.log = (md, level, vq, dist, config,
                                                                                 options, log)
        self.folder = md.path / prior_folder(level)
        self.ckpt = self.folder / "checkpoint"
        self.extra: dict[str, Any] = {}
        self.lora_info: dict[str, Any] | None = None
        self.trainable_extra: tuple[str, ...] = ()
        self.vocab: LabelVocab | None = None
        self.beats: dict[str, Any] | None = None
        self.writer_dir: Path | None = None
        self.grown = False  # the prior was grown from another model's (grow_from): fine-tune it

    def _note(self, msg: str) -> None:
        if self.dist.is_main:
            self.log(msg)

    def load_data(self, data: str | Path, cache_dir: str | Path | None, rebuild_cache: bool) -> None:
        """The manifest and the code cache: a code folder as it is, or an audio folder encoded once (rank 0)."""
        from ..data.code_cache import CodeCache, ensure_code_cache, is_code_folder

        md, vq, dist, o, seed = self.md, self.vq, self.dist, self.o, self.config.seed
        if Path(data).is_dir() and is_code_folder(data):
            if cache_dir is not None or rebuild_cache:
                raise UsageError(f"{data} is a code folder: --cache and --rebuild-cache apply to audio folders only")
            self.manifest = _on_rank0(dist, lambda: load_code_folder(data, md.path / "vqvae", self.level,
                                                                     vq.levels - 1, o.val_fraction, seed)[0])
            self.cache = CodeCache(data)
            if self.cache.sample_rate != vq.sample_rate or self.cache.hop_lengths != tuple(vq.hop_lengths):
                raise JukeboxError(f"{data}: codes were made by another VQ-VAE; re-encode with jukebox prepare --codes")
            self._note(f"training from the code folder {data} ({len(self.manifest.tracks)} tracks, levels "
                       f"{', '.join(map(str, self.cache.present))}; no audio needed)")
            return
        self.manifest = _on_rank0(dist, lambda: load_corpus(data, vq.sample_rate, o.val_fraction, seed, self.log))
        key = hashlib.sha1(str(Path(self.manifest.root).resolve()).encode()).hexdigest()[:12]
        cache_root = Path(cache_dir) if cache_dir is not None else md.path / "code_cache" / key

        def build_cache() -> None:
            vqvae = md.load_vqvae(dist.device)
            ensure_code_cache(self.manifest, vqvae, md.path / "vqvae", cache_root, rebuild=rebuild_cache,
                              log=self.log)

        _on_rank0(dist, build_cache)
        self.cache = CodeCache(cache_root)

    def build_model(self, resume: bool, restart: bool) -> None:
        """The prior to train: from the checkpoint (resume), the model directory's (fine-tuning, its vocabulary
        extended) or the preset's; then upgraded (every-position labels, tempo) and adapted (LoRA) as asked."""
        from ..prior.lora import apply_lora, mark_only_lora_trainable

        o, level = self.o, self.level
        if resume:
            self._resume_model()
        elif level in self.md.prior_levels() and (not restart or self.grown):
            self._existing_model()
        else:
            self.cfg, self.vocab = new_prior_config(o.preset or _default_prior_preset(self.vq, level), self.vq, level,
                                                    self.manifest, o.n_ctx)
            torch.manual_seed(self.config.seed)
            self.model = Prior(self.cfg)
        if o.labels_every_position and not resume:
            if self.cfg.labels is None:
                raise UsageError(f"--labels-every-position: the level-{level} prior has no labels")
            if not self.cfg.labels.every_position:
                self.model, self.cfg = with_labels_every_position(self.model)
                self._note("artist/genre labels now reach every position (zero-initialised projection)")
        if o.tempo and not resume and not (self.cfg.labels is not None and self.cfg.labels.tempo):
            self.model, self.cfg = with_tempo(self.model)
            self._note("the prior now takes a tempo and beat phase (zero-initialised embeddings)")
        if self.cfg.l_bins != self.vq.l_bins or self.cfg.hop_lengths != self.vq.hop_lengths:
            raise JukeboxError(f"the level-{level} prior was made for another VQ-VAE")
        if o.lora_rank and not resume:
            modules = apply_lora(self.model, o.lora_rank, o.lora_alpha)
            n = mark_only_lora_trainable(self.model, also=self.trainable_extra)
            alpha = float(o.lora_rank if o.lora_alpha is None else o.lora_alpha)
            self.lora_info = {"rank": o.lora_rank, "alpha": alpha, "modules": modules,
                              "also": list(self.trainable_extra)}
            self._note(f"LoRA rank {o.lora_rank} on {len(modules)} linears: {n} trainable parameters")
        if o.checkpoint_activations is not None:
            _set_activation_checkpointing(self.model, o.checkpoint_activations)

    def grow_from(self, base_md: ModelDir, restart: bool) -> None:
        """Grow the new level-L lyric prior from ``base_md``'s lyric-free prior of the level (the preset gives the
        lyric settings) and save it with the base's labels.json and tempi as this model directory's prior, which
        :meth:`build_model` then fine-tunes like any existing prior (its vocabulary extended by the corpus)."""
        from ..data.code_cache import vqvae_fingerprint
        from ..prior.config import prior_preset
        from .grow import base_layer_positions, grow_prior, lyric_growth_config

        md, level, o = self.md, self.level, self.o
        if level in md.prior_levels() and not restart:
            raise UsageError(f"{md.path} already has a level-{level} prior; grow into a new --model folder or pass "
                             "--restart to replace it")
        if level != self.vq.levels - 1:
            raise UsageError(f"--init-from grows a top-level lyric prior: use --level {self.vq.levels - 1}")
        if level not in base_md.prior_levels():
            raise UsageError(f"--init-from {base_md.path}: no level-{level} prior to grow from")
        if vqvae_fingerprint(base_md.path / "vqvae") != vqvae_fingerprint(md.path / "vqvae"):
            raise UsageError(f"--init-from {base_md.path}: its prior was made for another VQ-VAE than {md.path}'s")
        base_cfg = base_md.prior_config(level)
        if o.n_ctx is not None and o.n_ctx != base_cfg.n_ctx:
            raise UsageError(f"--n-ctx: a grown prior keeps the base's context ({base_cfg.n_ctx}); drop --n-ctx")
        cfg = lyric_growth_config(base_cfg, prior_preset(o.preset).lyrics)
        base_folder = base_md.path / prior_folder(level)
        vocab_dir = base_folder if (base_folder / LABELS_FILE).exists() else base_md.path
        if not (vocab_dir / LABELS_FILE).exists():
            raise JukeboxError(f"{base_folder}: the prior has labels but no {LABELS_FILE}")

        def grow() -> None:
            base = base_md.load_prior(level, "cpu")
            torch.manual_seed(self.config.seed)
            model = grow_prior(base, cfg)
            md.save_prior(model)
            LabelVocab.load(vocab_dir).save(self.folder)
            tempi = base_md.tempi(level)
            if tempi is not None:
                md.save_tempi(level, tempi)
            new = sorted(set(range(cfg.transformer.depth)) - set(base_layer_positions(base_cfg, cfg)))
            self.log(f"grew a lyric prior ({cfg.lyrics.style}) from the level-{level} prior of {base_md.path}: its "
                     f"{base_cfg.transformer.depth} layers kept, layers {new} and the lyric "
                     f"{'encoder' if cfg.lyrics.style == 'encoder_decoder' else 'embeddings'} new "
                     f"({cfg.lyrics.n_tokens} lyric characters per window)")

        _on_rank0(self.dist, grow)
        self.grown = True

    def _resume_model(self) -> None:
        from ..prior.config import PriorConfig
        from ..prior.lora import apply_lora, mark_only_lora_trainable

        extra = self.extra
        self.cfg = PriorConfig.from_dict(extra["model_config"], f"{self.ckpt}: model_config")
        self.vocab = LabelVocab.from_dict(extra["labels"]) if extra.get("labels") else None
        torch.manual_seed(self.config.seed)
        self.model = Prior(self.cfg)
        self.lora_info = extra.get("lora")
        if self.lora_info:
            info = self.lora_info
            apply_lora(self.model, int(info["rank"]), float(info["alpha"]), targets=info["modules"])
            self.trainable_extra = tuple(info.get("also", ()))
            mark_only_lora_trainable(self.model, also=self.trainable_extra)

    def _existing_model(self) -> None:
        from .finetune import extend_prior_labels, extend_vocab

        md, folder = self.md, self.folder
        self.model = md.load_prior(self.level, "cpu").train()
        self.cfg = self.model.config
        if self.cfg.labels is not None:
            old = LabelVocab.load(folder) if (folder / LABELS_FILE).exists() else (
                LabelVocab.load(md.path) if (md.path / LABELS_FILE).exists() else None)
            if old is None:
                raise JukeboxError(f"{folder}: the prior has labels but no {LABELS_FILE}")
            tracks = self.manifest.tracks
            self.vocab, new_a, new_g = extend_vocab(old, [t.artist for t in tracks], [t.genre for t in tracks])
            if new_a or new_g:
                self.model = extend_prior_labels(self.model, old, self.vocab, new_a, new_g)
                self.cfg = self.model.config
                if self.dist.is_main:
                    self.log(f"extended the vocabulary with {len(new_a)} artists and {len(new_g)} genres "
                             "(new embeddings start at the mean of the known ones)")
                    md.save_prior(self.model)
                    self.vocab.save(folder)
                if self.o.lora_rank:
                    self.trainable_extra = ("label_conditioner.artist_emb", "label_conditioner.genre_emb")
        if not self.grown:
            self._note(f"fine-tuning the level-{self.level} prior of {md.path} (pass --restart to start from the "
                       "preset)")

    def task(self, data: str | Path, log_dir: str | Path | None) -> PriorTask:
        """The prior's task: beats (tempo priors), labeller, train/validation windows, export and options."""
        from ..data.code_cache import CodeWindowSampler

        cfg, o, level, dist, manifest = self.cfg, self.o, self.level, self.dist, self.manifest
        tempo = cfg.labels is not None and cfg.labels.tempo
        if o.min_pulse and not tempo:
            _refuse_min_pulse(level)
        if tempo:
            self.beats = _on_rank0(dist, lambda: _corpus_beats(data, self.cache, manifest, self.log))
            if o.min_pulse:  # the stored tempo.json stays as it is
                weak = [t for t in manifest.tracks if t.path in self.beats and self.beats[t.path].pulse < o.min_pulse]
                had = sum(1 for t in weak if self.beats[t.path].bpm > 0)
                self.beats = without_weak_pulse(self.beats, o.min_pulse)
                self._note(f"--min-pulse {o.min_pulse:g}: {len(weak)} of {len(manifest.tracks)} tracks train without "
                           f"a tempo label (pulse clarity below {o.min_pulse:g}; {had} of them had beats)")
        labeller = None
        if cfg.labels is not None and self.vocab is not None:
            version = _label_version(cfg)
            for t in manifest.tracks:
                if len(split_genre(t.genre, version)) > cfg.labels.max_bow_genre_size:
                    raise JukeboxError(f"{t.path}: genre {t.genre!r} has more words than this prior takes "
                                       f"({cfg.labels.max_bow_genre_size}); shorten it in the metadata")
            labeller = Labeller(self.vocab, cfg.labels.max_bow_genre_size, cfg.lyrics.n_tokens, cfg.sample_length,
                                tempo=cfg.labels.tempo)
        if cfg.labels is not None and labeller is None:
            raise JukeboxError(f"{self.folder}: the prior needs labels but no vocabulary was found")
        down = cfg.cond_downsample
        train = CodeWindowSampler(self.cache, manifest, level, cfg.n_ctx, "train", down, beats=self.beats,
                                  balance=o.balance, balance_power=o.balance_power)
        if o.balance != "none" and dist.is_main:
            shares = ", ".join(f"{k} {100 * v:.0f}%" for k, v in train.shares.items())
            self.log(f"windows balanced by {o.balance} (power {o.balance_power:g}): {shares}")
        try:
            val = CodeWindowSampler(self.cache, manifest, level, cfg.n_ctx, "validation", down, beats=self.beats)
        except JukeboxError:
            val = None
        self.writer_dir = _writer_dir(log_dir, self.md.path / "logs" / prior_folder(level))
        media_vqvae = self.md.load_vqvae("cpu") if self.writer_dir is not None and dist.is_main else None
        if o.label_dropout and labeller is None:
            raise UsageError(f"--label-dropout: the level-{level} prior has no labels")
        if (o.input_noise or o.scheduled_sampling) and cfg.lyrics.style == "merged":
            raise UsageError("--input-noise / --scheduled-sampling: a lyric-merged (1b-style) prior reads lyrics and "
                             "codes as one sequence; train it without them")
        if o.align_loss:
            layer, head = alignment_site(self.model, o.align_layer, o.align_head)  # refuses other kinds of prior
            timed = sum(1 for t in train.tracks if t.words)
            self._note(f"alignment loss x {o.align_loss:g} on cross-attention layer {layer}, head {head}: {timed} of "
                       f"{len(train.tracks)} training tracks have word timings")
        config = self.config
        task = PriorTask(level, train, val, labeller, config.batch_size, config.seed, config.val_batches,
                         export=self.export, vqvae=media_vqvae, l_bins=cfg.l_bins, options=o)
        if dist.is_main:
            n_params = sum(p.numel() for p in self.model.parameters())
            self.log(f"training the level-{level} prior ({n_params / 1e6:.2f}M parameters, n_ctx {cfg.n_ctx}) on "
                     f"{len(train.tracks)} tracks ({train.dropped} too short), {dist.world_size} process(es) on "
                     f"{dist.device}")
        return task

    def export(self, m: torch.nn.Module) -> None:
        """Write the trained prior (or its LoRA adapters) where sampling finds it."""
        from ..prior.lora import save_lora

        vocab, folder = self.vocab, self.folder
        if self.lora_info:
            save_lora(m, folder / "lora", extra={"labels": vocab.to_dict() if vocab else None},
                      include=self.trainable_extra)
            if vocab is not None:
                vocab.save(folder / "lora")
            return
        self.md.save_prior(m)
        if vocab is not None:
            vocab.save(folder)
        if self.beats is not None:
            self.md.save_tempi(self.level, genre_tempi(self.manifest, self.beats))

    def extra_state(self) -> dict[str, Any]:
        """What every checkpoint keeps for a resume: the model config, vocabulary, LoRA settings and options."""
        return {"model_config": self.cfg.to_dict(), "labels": self.vocab.to_dict() if self.vocab else None,
                "lora": self.lora_info, "preset": self.o.preset, "options": self.o.to_dict()}

    def merge_lora(self) -> None:
        """Fold the exported adapters (EMA-averaged when --ema is on) into the prior's weights."""
        from ..prior.lora import load_lora
        from ..prior.lora import merge_lora as merge

        merged = copy.deepcopy(self.model).cpu()
        load_lora(merged, self.folder / "lora")
        merge(merged)
        for p in merged.parameters():
            p.requires_grad = True
        self.md.save_prior(merged)
        if self.vocab is not None:
            self.vocab.save(self.folder)
        self.log(f"merged the LoRA adapters into {self.folder}")
