"""One whole song through every level: seconds per minute of audio and real-time factor.

    python benchmarks/bench_song.py --hierarchy default --seconds 10 --threads 2           # the shipped model, CPU
    python benchmarks/bench_song.py --hierarchy cpu_default --seconds 10 --device cpu      # random weights
    python benchmarks/bench_song.py --hierarchy 5b_lyrics --seconds 60 --device cuda --dtype bfloat16 \\
        --upsample-mode parallel --decode graph                                            # the full 5b_lyrics

Hierarchies: ``default`` (the embedded default model with its trained weights, through the public API exactly as
``jukebox sample`` runs it: ``Jukebox.generate``, labels, conditioning, VQ-VAE decode; load time reported apart),
and, with random weights, ``5b_lyrics`` (the released top + both upsamplers + the 44.1 kHz VQ-VAE), ``1b_lyrics``,
``tiny`` (the test shapes) and ``cpu_default`` (a small stand-in: the 22.05 kHz codec and small priors). Random
priors are built on the device one level at a time and released after it (peak memory is one prior plus its
caches). Prints one JSON object and a table; ``--json`` also writes it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from jukebox.config import vqvae_preset
from jukebox.prior.config import PriorConfig, TransformerConfig, UpsamplerConditionerConfig, prior_preset
from jukebox.prior.model import Prior
from jukebox.prior.sampler import DECODE_MODES
from jukebox.sampling.pipeline import DEFAULT_HOP_FRACTIONS, LevelSettings, sample_levels


def _small(level: int, n_ctx: int, width: int, depth: int, sample_rate: int) -> PriorConfig:
    base = prior_preset("tiny_top" if level == 2 else "tiny_upsampler")
    t = TransformerConfig(width=width, depth=depth, heads=2, attn_order=2, blocks=n_ctx // 32)
    c = base.replace(level=level, n_ctx=n_ctx, l_bins=2048, transformer=t,
                     labels=base.labels.replace(sample_rate=sample_rate))
    if level < 2:
        c = c.replace(upsampler=UpsamplerConditionerConfig(width=width, depth=2, dilation_cycle=8))
    return c


def hierarchy(name: str) -> tuple[str, dict[int, PriorConfig]]:
    """(VQ-VAE preset, level -> prior config)."""
    if name in ("5b_lyrics", "1b_lyrics", "5b"):
        return "openai", {2: prior_preset(name), 1: prior_preset("upsampler_level_1"),
                          0: prior_preset("upsampler_level_0")}
    if name == "tiny":
        return "tiny", {2: prior_preset("tiny_top"), 1: prior_preset("tiny_upsampler"),
                        0: prior_preset("tiny_upsampler").replace(level=0)}
    if name == "cpu_default":
        sr = vqvae_preset("default22k").sample_rate
        return "default22k", {2: _small(2, 512, 128, 4, sr), 1: _small(1, 512, 128, 4, sr),
                              0: _small(0, 512, 128, 4, sr)}
    raise SystemExit(f"unknown hierarchy {name!r}")


def build_prior(config: PriorConfig, dtype: torch.dtype, device: str) -> Prior:
    torch.manual_seed(config.level)
    default = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # built directly in the inference dtype: no fp32 copy on the device
    try:
        with torch.device(device):
            model = Prior(config).eval()
            with torch.no_grad():
                for p in model.parameters():
                    if p.dim() > 1 and p.abs().max() == 0:
                        p.normal_(std=0.02)
    finally:
        torch.set_default_dtype(default)
    return model.to(dtype)


def label_fn_for(configs: dict[int, PriorConfig], n: int, total_length: int, device: str):
    def label_fn(level: int, start: int) -> torch.Tensor | None:
        c = configs[level]
        lab = c.labels
        if lab is None:
            return None
        genres = torch.full((n, lab.max_bow_genre_size), -1)
        genres[:, 0] = 1
        offset = start * c.raw_to_tokens
        lyr = (torch.arange(c.lyrics.n_tokens) % 26 + 1).expand(n, -1)
        return torch.cat([torch.tensor([[total_length, offset, c.sample_length]] * n), torch.ones(n, 1).long(),
                          genres, lyr], 1).to(device)
    return label_fn


def _print(result: dict, json_path: Path | None) -> None:
    print(json.dumps(result, indent=1))
    audio_s, total_s, r = result["audio_seconds"], result["total_seconds"], result
    print(f"\n{r['hierarchy']} on {r['device_name']} ({r['threads']} threads): {audio_s:.1f} s of audio "
          f"in {total_s:.1f} s (sampling {r['sampling_seconds']:.1f} s, VQ-VAE {r['vqvae_decode_seconds']:.1f}"
          f" s): real-time factor {result['real_time_factor']:.2f}, {result['seconds_per_minute_of_audio']:.0f} s per "
          "minute of audio", file=sys.stdout)
    if r.get("cpu_seconds") is not None:
        print(f"  processor time {r['cpu_seconds']:.1f} s (all threads)")
    for lv in result["levels"]:
        cpu = f", processor {lv['cpu_seconds']:.2f} s" if lv.get("cpu_seconds") is not None else ""
        print(f"  level {lv['level']}: {lv['tokens']} tokens in {lv['seconds']:.2f} s "
              f"({lv['tokens_per_s']:.0f} tok/s{cpu})")
    if json_path:
        json_path.write_text(json.dumps(result, indent=1))


def parse_shape(text: str) -> tuple[int, int, int, int | None]:
    """``LEVEL:WIDTHxDEPTH[/NCTX]`` -> (level, width, depth, n_ctx or None)."""
    try:
        level, rest = text.split(":")
        size, _, n_ctx = rest.partition("/")
        width, depth = size.split("x")
        return int(level), int(width), int(depth), int(n_ctx) if n_ctx else None
    except ValueError:
        raise SystemExit(f"--shape {text!r}: expected LEVEL:WIDTHxDEPTH[/NCTX], e.g. 2:384x6 or 0:256x8/512") from None


def shaped_model_dir(shapes: list[str], out: Path) -> Path:
    """A copy of the default model in ``out`` whose priors named in ``shapes`` are replaced by random-weight priors
    of those shapes (heads keep the default's head width where they divide; the rest of the config is kept)."""
    import shutil

    from jukebox.api import default_model_path
    from jukebox.checkpoint.model_dir import ModelDir, prior_folder

    src = default_model_path()
    shutil.copytree(src, out, dirs_exist_ok=True)
    md = ModelDir(out)
    for text in shapes:
        level, width, depth, n_ctx = parse_shape(text)
        c = md.prior_config(level)
        t = c.transformer
        head_dim = max(1, int(t.m_attn * t.width) // t.heads)
        heads = max(1, int(t.m_attn * width) // head_dim)
        c = c.replace(transformer=t.replace(width=width, depth=depth, heads=heads), n_ctx=n_ctx or c.n_ctx)
        prior = build_prior(c, torch.float32, "cpu")
        shutil.rmtree(out / prior_folder(level))
        md.save_prior(prior)
        shutil.copy2(src / prior_folder(level) / "labels.json", out / prior_folder(level) / "labels.json")
    return out


def time_sampler_calls(calls: list[dict], cuda: bool) -> None:
    """Wrap the sampler's prefill and token loop so that each call appends {known, new, prefill_s, tokens_s} to
    ``calls`` (synchronised on CUDA; ``tokens_s`` includes building the decode step and its CUDA graph)."""
    from jukebox.prior import sampler

    orig_prefill, orig_tokens = sampler._Decoding.prefill, sampler._Decoding.tokens

    def sync() -> float:
        if cuda:
            torch.cuda.synchronize()
        return time.perf_counter()

    def prefill(self, n):
        t0 = sync()
        orig_prefill(self, n)
        calls.append(dict(rows=self.out.shape[0], known=n, prefill_s=sync() - t0))

    def tokens(self, *a, **k):
        t0 = sync()
        first = self.done
        orig_tokens(self, *a, **k)
        calls[-1].update(new=self.out.shape[1] - first, tokens_s=sync() - t0)

    sampler._Decoding.prefill, sampler._Decoding.tokens = prefill, tokens


def hop_summary(calls: list[dict]) -> dict:
    """Sampler calls of one level: how many, and the means of those that continue known tokens (hops)."""
    hops = [c for c in calls if c["known"] > 0 and "tokens_s" in c]
    out = dict(calls=len(calls), hops=len(hops), prefill_s=round(sum(c["prefill_s"] for c in calls), 3),
               tokens_s=round(sum(c.get("tokens_s", 0.0) for c in calls), 3))
    if hops:
        n = len(hops)
        out["per_hop"] = dict(rows=hops[0]["rows"], known=sum(c["known"] for c in hops) / n,
                              new=sum(c["new"] for c in hops) / n,
                              prefill_s=round(sum(c["prefill_s"] for c in hops) / n, 4),
                              tokens_s=round(sum(c["tokens_s"] for c in hops) / n, 4))
    return out


def run_default(args: argparse.Namespace) -> dict:
    """The embedded default model through ``Jukebox.generate`` (what ``jukebox sample`` runs); with ``--shape``,
    the same with some priors replaced by random-weight ones of other shapes (costs do not depend on weights)."""
    import tempfile

    import jukebox
    from jukebox.api import default_model_path

    if default_model_path() is None:
        raise SystemExit("this install has no embedded default model")
    path = None
    if args.shape:
        path = shaped_model_dir(args.shape, Path(tempfile.mkdtemp(prefix="bench_song_")) / "model")
    t0 = time.perf_counter()
    model = jukebox.load_model(path, device=args.device)
    for level in model.prior_levels:
        model.prior(level)  # load every prior up front: sampling times exclude loading
    load_s = time.perf_counter() - t0
    levels = sorted(args.levels)
    kw = dict(seconds=args.seconds, n_samples=args.n_samples, seed=0, levels=levels, alignment=False,
              temperature=args.temperature)
    if args.decode:
        kw["decode"] = args.decode
    if args.upsample_mode:
        kw["upsample_mode"] = args.upsample_mode
    if args.draw:
        kw["draw"] = args.draw
    if args.weights != "native":
        kw["weights"] = args.weights
    if args.top_hop_fraction:
        kw["hop_fraction"] = {lvl: DEFAULT_HOP_FRACTIONS[lvl] for lvl in levels} | {max(levels): args.top_hop_fraction}
    if args.warmup:  # one short call first (allocator, thread pool, lazy init)
        model.generate(**{**kw, "seconds": args.warmup, "levels": [max(levels)]})
    t1, c1 = time.perf_counter(), time.process_time()
    out = model.generate(**kw)
    wall, cpu = time.perf_counter() - t1, time.process_time() - c1
    audio_s = out.audio.shape[-1] / model.sample_rate
    sampling_s, decode_s = out.settings["sampling_seconds"], out.settings["decode_seconds"]
    shapes = {lvl: dict(width=model.prior(lvl).config.transformer.width,
                        depth=model.prior(lvl).config.transformer.depth, n_ctx=model.prior(lvl).n_ctx,
                        decoder_params=sum(p.numel() for p in model.prior(lvl).decoder.parameters()))
              for lvl in model.prior_levels}
    result = dict(hierarchy="default" if not args.shape else "default+" + ",".join(args.shape), shapes=shapes,
                  device=args.device, device_name="cpu" if args.device == "cpu" else
                  torch.cuda.get_device_name(), torch=torch.__version__, dtype="float32",
                  decode=out.settings["per_level"][max(levels)]["decode"],
                  upsample_mode=out.settings["upsample_mode"], draw=out.settings["draw"], n_samples=args.n_samples,
                  temperature=args.temperature,
                  hop_fractions={lvl: s["hop_fraction"] for lvl, s in out.settings["per_level"].items()},
                  audio_seconds=audio_s, sampling_seconds=sampling_s,
                  vqvae_decode_seconds=decode_s, total_seconds=wall, real_time_factor=audio_s / wall,
                  seconds_per_minute_of_audio=wall * 60.0 / audio_s, threads=torch.get_num_threads(),
                  load_seconds=load_s, cpu_seconds=cpu,
                  levels=[dict(level=r.level, tokens=r.tokens, seconds=r.seconds, tokens_per_s=r.tokens_per_second,
                               cpu_seconds=r.cpu_seconds) for r in out.reports])
    _print(result, args.json)
    return result


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hierarchy", default="cpu_default")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--n-samples", type=int, default=1)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--upsample-mode", default=None, choices=["sequential", "parallel"],
                    help="default: parallel (default hierarchy: the model's own default)")
    ap.add_argument("--draw", default=None, choices=["multinomial", "cdf"],
                    help="categorical draw (default: multinomial; default hierarchy: the model's own default)")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--warmup", type=float, default=1.0, help="default hierarchy: seconds of a warm-up draft (0: none)")
    ap.add_argument("--decode", default=None, choices=list(DECODE_MODES),
                    help="decode step (default: eager; default hierarchy: the model's own default)")
    ap.add_argument("--levels", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--max-windows", type=int, default=None, help="parallel upsampling: windows per sampler call")
    ap.add_argument("--top-hop-fraction", type=float, default=None,
                    help=f"hop fraction of the top level (default: {DEFAULT_HOP_FRACTIONS[2]}, the original's)")
    ap.add_argument("--weights", default="native", choices=["native", "int8", "fp8"],
                    help="the priors' block linears: native, or weight-only 8-bit")
    ap.add_argument("--hop-times", action="store_true",
                    help="time every sampler call (window) apart: its prefill of known tokens and its decode steps")
    ap.add_argument("--no-audio", action="store_true", help="skip the VQ-VAE decode")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--shape", action="append", default=[],
                    help="default hierarchy: replace a prior by a random-weight one of this shape, "
                         "LEVEL:WIDTHxDEPTH[/NCTX] (repeatable), to measure what another model shape would cost")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.hierarchy == "default":
        return run_default(args)
    args.upsample_mode = args.upsample_mode or "parallel"
    args.decode = args.decode or "eager"
    dtype = getattr(torch, args.dtype)
    cuda = args.device.startswith("cuda")
    vq_name, configs = hierarchy(args.hierarchy)
    vq = vqvae_preset(vq_name)
    hops = vq.hop_lengths
    top_hop = hops[max(args.levels)]
    length = int(args.seconds * vq.sample_rate) // top_hop * top_hop
    n = args.n_samples
    settings = {lvl: LevelSettings(temperature=args.temperature, top_k=0,
                                   hop_fraction=args.top_hop_fraction or DEFAULT_HOP_FRACTIONS[2] if lvl == 2 else
                                   DEFAULT_HOP_FRACTIONS[lvl],
                                   chunk_size=1024 if cuda else 256, max_batch_size=max(16, n), decode=args.decode,
                                   draw=args.draw or "multinomial", max_windows=args.max_windows,
                                   weights=args.weights)
                for lvl in args.levels}
    label_fn = label_fn_for(configs, n, length, args.device)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    build_s: dict[int, float] = {}

    def load(level: int) -> Prior:
        t0 = time.perf_counter()
        prior = build_prior(configs[level], dtype, args.device)
        build_s[level] = time.perf_counter() - t0
        return prior

    partial: dict = dict(hierarchy=args.hierarchy, seconds=args.seconds, levels_done=[])
    mark = [time.perf_counter()]
    calls: list[dict] = []  # --hop-times: every sampler call of the level running now
    if args.hop_times:
        time_sampler_calls(calls, cuda)

    def release(level: int, prior: object) -> None:
        if cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        partial["levels_done"].append(dict(level=level, seconds_incl_build=now - mark[0],
                                           build_seconds=build_s.get(level),
                                           peak_gpu_memory_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda
                                           else None))
        mark[0] = now
        if args.hop_times:
            partial["levels_done"][-1]["calls"] = hop_summary(calls)
            calls.clear()
        print(json.dumps(partial["levels_done"][-1]), file=sys.stderr, flush=True)
        if args.json:
            args.json.write_text(json.dumps(partial, indent=1))
        if cuda:
            torch.cuda.empty_cache()

    codes = {lvl: torch.zeros(n, 0, dtype=torch.long, device=args.device) for lvl in range(3)}
    gen = torch.Generator(device=args.device).manual_seed(0)
    t0 = time.perf_counter()
    codes, reports = sample_levels(load, codes, args.levels, length, label_fn, settings, hops, gen,
                                   release=release, upsample_mode=args.upsample_mode)
    if cuda:
        torch.cuda.synchronize()
    sampling_s = time.perf_counter() - t0 - sum(build_s.values())
    decode_s = 0.0
    if not args.no_audio:
        from jukebox.codec import decode_codes
        from jukebox.vqvae import VQVAE

        with torch.device(args.device):
            vqvae = VQVAE(vq).eval()
        t1 = time.perf_counter()
        with torch.no_grad():
            audio = decode_codes(vqvae, codes[min(args.levels)], min(args.levels))
        if cuda:
            torch.cuda.synchronize()
        decode_s = time.perf_counter() - t1
        assert audio.shape[-1] == length
    audio_s = length / vq.sample_rate
    total_s = sampling_s + decode_s
    result = dict(hierarchy=args.hierarchy, device=args.device,
                  device_name=torch.cuda.get_device_name() if cuda else "cpu", torch=torch.__version__,
                  dtype=args.dtype, decode=args.decode, weights=args.weights, upsample_mode=args.upsample_mode,
                  draw=args.draw or "multinomial", n_samples=n,
                  audio_seconds=audio_s, sampling_seconds=sampling_s, vqvae_decode_seconds=decode_s,
                  total_seconds=total_s, real_time_factor=audio_s / total_s,
                  seconds_per_minute_of_audio=total_s * 60.0 / audio_s, threads=torch.get_num_threads(),
                  peak_gpu_memory_gb=torch.cuda.max_memory_allocated() / 2**30 if cuda else None,
                  build_seconds=build_s,
                  levels=[dict(level=r.level, tokens=r.tokens, seconds=r.seconds, tokens_per_s=r.tokens_per_second,
                               cpu_seconds=r.cpu_seconds) for r in reports])
    if args.hop_times:
        result["sampler_calls"] = {d["level"]: d["calls"] for d in partial["levels_done"]}
    _print(result, args.json)
    return result


if __name__ == "__main__":
    main()
