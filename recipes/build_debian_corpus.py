#!/usr/bin/env python3
"""Rebuild the default model's training corpus from the music of Debian's game-soundtrack packages.

For each package: ``apt-get download`` + ``dpkg -x`` into a work folder (kept, so reruns cost nothing), unzip the
archives that hold the music (0ad, ufoai, nexuiz), find the music files, read their labels (artist = composer from
tags, credit files or file names; genre = a curated style per package), decode, mix to mono, resample with soxr
and write FLAC (or Ogg Vorbis) to ``OUT/PACKAGE/``. Each track gets a ``.credits.txt`` (its title, composer,
source file and the matching stanza of the package's Debian copyright file); each package folder gets the full
``copyright.txt``. Frets on Fire songs are mixed from their stems (``song.ogg`` + ``guitar.ogg``).
``OUT/metadata.csv`` (file, artist, genre, lyrics, split, package, title, album, seconds, source, artist_from,
stems_mixed) is rewritten from every finished package at the end; ``split`` is a seeded hash of the file name, so it
never changes when packages are added. A package with ``OUT/PACKAGE/.done.json`` is skipped (``--redo`` to
rebuild, ``--relabel`` to redo only labels and credits). Tracks shorter than ``--min-seconds`` (default 30) are
left out. recipes/corpus.md describes the labels.

    python recipes/build_debian_corpus.py --out CORPUS [--packages wesnoth-1.16-music,naev-data]
        [--sample-rate 22050] [--format flac|ogg] [--work CORPUS_WORK] [--jobs 2]

The corpus is never committed: keep ``--out`` and ``--work`` outside the repository. Needs ``mutagen``
(``pip install mutagen``, in the ``train`` extra), ``apt-get`` and ``dpkg``.
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import hashlib
import io
import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import soundfile as sf

from jukebox.audio import load_audio


@dataclass(frozen=True)
class Package:
    """Where a package keeps its music and how its labels are found."""

    globs: tuple[str, ...]  # relative to the unpacked package (or to the unzipped archive)
    genre: str | Callable[[str], str]  # curated style, or a function of the file's path
    archive: tuple[str, tuple[str, ...]] | None = None  # (zip inside the package, member patterns)
    exclude: str | None = None  # regex on the relative path
    fallback_artist: str | None = None
    hints: tuple[str, ...] = field(default_factory=tuple)  # package-specific label sources, see _hint_*


def _supertux_genre(rel: str) -> str:
    return "chiptune" if "/retro/" in rel else "electronic"


GAMES = "usr/share/games"
PACKAGES: dict[str, Package] = {
    "wesnoth-1.16-music": Package((f"{GAMES}/wesnoth/1.16/data/core/music/*.ogg",), "orchestral"),
    "warzone2100-music": Package((f"{GAMES}/warzone2100/music/**/*.opus",), "electronic", hints=("warzone",)),
    "singularity-music": Package((f"{GAMES}/singularity/music/**/*.ogg",), "ambient", fallback_artist="Maxstack"),
    "nexuiz-music": Package(("sound/cdtracks/*.ogg",), "electronic",
                            archive=(f"{GAMES}/nexuiz/data/music.pk3", ("sound/cdtracks/*",))),
    "widelands-data": Package((f"{GAMES}/widelands/data/music/*.ogg",), "classical"),
    "supertux-data": Package((f"{GAMES}/supertux2/music/**/*.ogg",), _supertux_genre),
    "naev-data": Package(("usr/share/naev/dat/snd/music/*.ogg",), "ambient"),
    "hedgewars-data": Package((f"{GAMES}/hedgewars/Data/Music/*.ogg",), "folk", hints=("hedgewars",)),
    "fretsonfire-songs-muldjord": Package((f"{GAMES}/fretsonfire/data/songs/*/*/song.ogg",), "metal",
                                          hints=("songini",)),
    "fretsonfire-songs-sectoid": Package((f"{GAMES}/fretsonfire/data/songs/*/*/song.ogg",), "rock",
                                         hints=("songini",)),
    "ufoai-music": Package(("music/*.ogg",), "electronic", archive=(f"{GAMES}/ufoai/base/0music.pk3", ("music/*",)),
                           hints=("ufoai",)),
    "supertuxkart-data": Package((f"{GAMES}/supertuxkart/data/music/*.ogg",), "electronic",
                                 exclude=r"_fast\.ogg$", hints=("stk",)),
    "blobwars-data": Package((f"{GAMES}/blobwars/music/*",), "electronic", exclude=r"\.tags$", hints=("blobtags",)),
    "colobot-common-sounds": Package((f"{GAMES}/colobot/music/*.ogg",), "electronic"),
    "freedroidrpg-data": Package(("usr/share/freedroidrpg/data/sound/music/*.ogg",), "ambient"),
    "flare-game": Package((f"{GAMES}/flare/mods/*/music/*.ogg",), "orchestral"),
    "megaglest-data": Package((f"{GAMES}/megaglest/data/core/menu/music/*.ogg",
                               f"{GAMES}/megaglest/techs/*/factions/*/music/*.ogg"), "orchestral"),
    "hyperrogue-music": Package(("usr/share/hyperrogue/music/*.ogg",), "ambient"),
    "0ad-data": Package(("audio/music/*.ogg",), "folk",
                        archive=(f"{GAMES}/0ad/mods/public/public.zip", ("audio/music/*",)), hints=("0ad",)),
}
#: Spellings of one composer that the tags disagree on, and web addresses used as names.
ALIASES = {
    "dj sjors": "DJ Sjors",
    "www.indiedb.com/members/crystan": 'Christian "Crystan" Hoffmann',
    "crystan": 'Christian "Crystan" Hoffmann',
    "http://zhaymusic.com/": "Joseph G. Toscano (Zhaytee)",
    "klaus halfmann aka hasi50": "Klaus Halfmann",
    "max freeman & chris leutwyler": "Chris Leutwyler & Max Freeman",
    "speedsound": "Speedsound",
    "braden \"meoblast001\" walters": "Braden Walters",
    "www.elysis.de": "Gerd (elysis) Raudenbusch",
    "elysis": "Gerd (elysis) Raudenbusch",
    "0zone0ne": "OzoneOne",
    "ozoneone": "OzoneOne",
    "krobonil": "Chris Leutwyler",
    "chris leutwyler (krobonil)": "Chris Leutwyler",
    "ozoneone and krobonil": "OzoneOne & Chris Leutwyler",
    "ozoneone & krobonil": "OzoneOne & Chris Leutwyler",
    "krobonil & ozoneone": "OzoneOne & Chris Leutwyler",
    "http://opengameart.org, from bart": "Bart Kelsey",
    "marine": '"Marine" Baklund',
    'manuel "vanethian" marino': "Manuel 'Vanethian' Marino",
}
#: ufoai names its files after the composer (copyright file and tags agree).
UFOAI_PREFIX = {"Crystan": 'Christian "Crystan" Hoffmann', "Marine": '"Marine" Baklund', "David": "David Bauer",
                "Psymong": "Psymong", "van_": "Manuel 'Vanethian' Marino", "karlmacklin": "Karl Macklin",
                "AlexFightmare": "Alex", "TheThings": "TheThings"}
_BAD_NAMES = {"", "<unknown>", "unknown", "(none)", "none", "various"}


# ------------------------------------------------------------------------------------------------ download


def unpack(pkg: str, work: Path) -> Path:
    """Download and unpack ``pkg`` into ``work/x/pkg`` (once); return that folder."""
    dest = work / "x" / pkg
    if (dest / ".unpacked").exists():
        return dest
    debs = work / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    found = sorted(debs.glob(f"{pkg}_*.deb"))
    if not found:
        print(f"[{pkg}] apt-get download", flush=True)
        subprocess.run(["apt-get", "download", pkg], cwd=debs, check=True, stdout=subprocess.DEVNULL)
        found = sorted(debs.glob(f"{pkg}_*.deb"))
    dest.mkdir(parents=True, exist_ok=True)
    subprocess.run(["dpkg", "-x", str(found[-1]), str(dest)], check=True)
    (dest / ".unpacked").write_text(found[-1].name)
    return dest


def source_root(pkg: str, spec: Package, tree: Path, work: Path) -> Path:
    """The folder the globs are relative to: the unpacked package, or its unzipped music archive."""
    if spec.archive is None:
        return tree
    zpath, patterns = spec.archive
    dest = work / "z" / pkg
    if (dest / ".unzipped").exists():
        return dest
    dest.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tree / zpath) as z:
        for name in z.namelist():
            if not name.endswith("/") and any(fnmatch.fnmatch(name, p) for p in patterns) and ".." not in name:
                z.extract(name, dest)
        if pkg == "0ad-data":
            z.extract("gui/credits/texts/audio.json", dest)
    (dest / ".unzipped").write_text(zpath)
    return dest


# ------------------------------------------------------------------------------------------------ labels


def clean_name(name: str | None) -> str | None:
    """Tidy a composer name: strip, drop placeholders and credit words, unify known aliases."""
    if not name:
        return None
    n = re.sub(r"\s+", " ", str(name)).strip().strip(",;")
    n = re.sub(r"^(composed and performed by|composed by|music by|by)\s+", "", n, flags=re.I)
    n = re.sub(r"\s+-\s+(https?://|www\.)\S+$", "", n)  # "Muldjord - www.muldjord.com"
    n = re.sub(r"\s*<[^>]*>\s*$", "", n).strip()  # "HSR <http://...>"
    n = re.sub(r"\s*\((www\.|https?://|contains )[^)]*\)\s*$", "", n).strip()  # "(www.site.com)", "(contains ...)"
    n = re.sub(r"\s+aka\s+.*$", "", n, flags=re.I).strip()  # "Keith Baylis aka Vim"
    if n.lower() in _BAD_NAMES:
        return None
    return ALIASES.get(n.lower(), n)


def tags_of(path: Path) -> dict[str, str]:
    import mutagen  # a build-time dependency (the train extra)

    try:
        f = mutagen.File(str(path), easy=True)
    except Exception:  # noqa: BLE001
        return {}
    out: dict[str, str] = {}
    if f is not None and f.tags is not None:
        for k in ("artist", "composer", "title", "album", "genre", "license", "copyright"):
            try:
                v = f.tags.get(k)
            except (KeyError, ValueError):
                v = None
            if v and str(v[0]).strip():
                out[k] = str(v[0]).strip()
    return out


def _hint_warzone(path: Path) -> dict[str, str]:
    album = path.parent / "album.json"
    if not album.exists():  # menu.opus at the top: the original soundtrack's menu theme
        album = path.parent / "albums" / "original_soundtrack" / "album.json"
    d = json.loads(album.read_text())
    for t in d.get("tracks", []):
        if t.get("filename") == path.name:
            return {"artist": t.get("author") or d.get("author", ""), "title": t.get("title", ""),
                    "album": d.get("title", "")}
    return {"artist": d.get("author", ""), "album": d.get("title", "")}


def _hint_stk(path: Path) -> dict[str, str]:
    for m in path.parent.glob("*.music"):
        try:
            root = ET.parse(m).getroot()
        except ET.ParseError:
            continue
        if root.get("file") == path.name:
            return {"artist": root.get("composer", ""), "title": root.get("title", "")}
    return {}


def _hint_songini(path: Path) -> dict[str, str]:
    ini = path.parent / "song.ini"
    out = {}
    for line in ini.read_text(errors="replace").splitlines():
        k, _, v = line.partition("=")
        if k.strip() == "artist":
            out["artist"] = v.strip()
        elif k.strip() == "name":
            out["title"] = v.strip()
    return out


def _hint_blobtags(path: Path) -> dict[str, str]:
    side = path.with_name(path.name + ".tags")
    out = {}
    if side.exists():
        for line in side.read_text(errors="replace").splitlines():
            k, _, v = line.partition("=")
            if k in ("artist", "title", "license"):
                out[k] = v.strip()
    return out


def _hint_hedgewars(path: Path) -> dict[str, str]:
    credits = path.parent / "credits.txt"
    if credits.exists():
        for line in credits.read_text(errors="replace").splitlines():
            k, _, v = line.partition("=")
            if k.strip() == path.name:
                return {"artist": v.split(" - ")[0].strip()}
    return {}


def _hint_ufoai(path: Path) -> dict[str, str]:
    for prefix, name in UFOAI_PREFIX.items():
        if path.name.startswith(prefix):
            return {"artist": name}
    return {}


def _hint_0ad(path: Path) -> dict[str, str]:
    return {}  # the credits name 0 A.D.'s composers but not per track; tags name two tracks


HINTS: dict[str, Callable[[Path], dict[str, str]]] = {
    "warzone": _hint_warzone, "stk": _hint_stk, "songini": _hint_songini, "blobtags": _hint_blobtags,
    "hedgewars": _hint_hedgewars, "ufoai": _hint_ufoai, "0ad": _hint_0ad,
}


# ------------------------------------------------------------------------------------------------ copyright


def parse_copyright(text: str) -> list[dict[str, str]]:
    """Stanzas of a Debian copyright file (DEP-5) as dicts; free-form files give one stanza with everything."""
    stanzas = []
    for block in re.split(r"\n\s*\n", text):
        d: dict[str, str] = {}
        key = None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                d[key] += "\n" + line.strip()
            elif ":" in line:
                key, _, v = line.partition(":")
                key = key.strip().lower()
                d[key] = v.strip()
        if d:
            stanzas.append(d)
    return stanzas


def copyright_for(stanzas: list[dict[str, str]], src_rel: str) -> tuple[dict[str, str] | None, bool]:
    """The last DEP-5 stanza whose Files patterns match a suffix of ``src_rel``; and whether it names it exactly."""
    parts = src_rel.split("/")
    suffixes = ["/".join(parts[i:]) for i in range(len(parts))]
    best, exact = None, False
    for st in stanzas:
        pats = st.get("files", "").split()
        for p in pats:
            if any(fnmatch.fnmatch(s, p) for s in suffixes):
                best, exact = st, ("*" not in p and "?" not in p)
                break
    return best, exact


def holder(stanza: dict[str, str]) -> str | None:
    """The first copyright holder of a stanza, without years and (C)."""
    first = stanza.get("copyright", "").strip().splitlines()[0] if stanza.get("copyright", "").strip() else ""
    n = re.sub(r"(?i)^(copyright\s*)?(\(c\)|©)?\s*[\d\s,\-–]*", "", first).strip()
    n = re.sub(r"\s*<[^>]*>", "", n).strip()
    return clean_name(n)


# ------------------------------------------------------------------------------------------------ build


def slug(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "_", text).strip("_")
    return s[:80] or "track"


def split_of(file: str, seed: int, val_fraction: float) -> str:
    h = int(hashlib.sha256(f"{seed}:{file}".encode()).hexdigest()[:12], 16) / 16**12
    return "validation" if h < val_fraction else "train"


def convert(args: tuple[str, str, int, str, float, tuple[str, ...], bool]) -> tuple[str, float | None, str]:
    """Decode one file (plus its stems, mixed in) to mono at ``sr`` and write it.

    Returns (dest, seconds or None when skipped, reason).
    """
    src, dest, sr, fmt, min_seconds, stems, reuse = args
    if reuse and Path(dest).exists():
        return dest, float(sf.info(dest).duration), ""
    try:
        audio, _ = load_audio(src, sample_rate=sr, mono=True)
        for stem in stems:
            extra, _ = load_audio(stem, sample_rate=sr, mono=True)
            n = max(audio.shape[0], extra.shape[0])
            audio = np.pad(audio, (0, n - audio.shape[0])) + np.pad(extra, (0, n - extra.shape[0]))
        peak = float(np.abs(audio).max()) if audio.size else 0.0
        if peak > 1.0:
            audio = audio / peak
    except Exception as e:  # noqa: BLE001
        return dest, None, f"unreadable: {str(e)[:150]}"
    seconds = audio.shape[0] / sr
    if seconds < min_seconds:
        return dest, None, f"too short ({seconds:.1f} s)"
    peak = float(np.abs(audio).max())
    if peak < 1e-4:
        return dest, None, "silent"
    tmp = dest + ".tmp"
    if fmt == "flac":
        sf.write(tmp, audio, sr, format="FLAC", subtype="PCM_16")
    else:
        sf.write(tmp, audio, sr, format="OGG", subtype="VORBIS")
    Path(tmp).replace(dest)
    return dest, seconds, ""


def build_package(pkg: str, out: Path, work: Path, sr: int, fmt: str, min_seconds: float, jobs: int,
                  reuse: bool = False) -> list[dict]:
    """Build one package's folder; with ``reuse`` existing audio files are kept and only labels are redone."""
    spec = PACKAGES[pkg]
    tree = unpack(pkg, work)
    root = source_root(pkg, spec, tree, work)
    files: list[Path] = []
    for g in spec.globs:
        files += [p for p in root.glob(g) if p.is_file() and not p.name.startswith(".")]
    files = sorted(set(files))
    if spec.exclude:
        files = [p for p in files if not re.search(spec.exclude, p.relative_to(root).as_posix())]
    cfile = tree / "usr/share/doc" / pkg / "copyright"
    ctext = cfile.read_text(errors="replace") if cfile.exists() else ""
    stanzas = parse_copyright(ctext)
    version = (tree / ".unpacked").read_text().split("_")[1] if (tree / ".unpacked").exists() else "?"
    dest_dir = out / pkg
    dest_dir.mkdir(parents=True, exist_ok=True)
    (dest_dir / "copyright.txt").write_text(ctext or f"(no copyright file in {pkg})\n")
    rows, jobs_in, used = [], [], set()
    for p in files:
        rel = p.relative_to(root).as_posix()
        src_rel = (spec.archive[0].rsplit("/", 1)[0] + "/" + rel) if spec.archive else rel
        tags = tags_of(p)
        info: dict[str, str] = {}
        for h in spec.hints:
            info.update({k: v for k, v in HINTS[h](p).items() if v})
        stanza, exact = copyright_for(stanzas, src_rel)
        artist = (clean_name(info.get("artist")) or clean_name(tags.get("composer")) or clean_name(tags.get("artist"))
                  or (holder(stanza) if stanza and exact else None) or spec.fallback_artist
                  or f"various ({pkg})")
        artist_from = ("credits" if clean_name(info.get("artist")) else "tags" if
                       (clean_name(tags.get("composer")) or clean_name(tags.get("artist"))) else
                       "copyright" if stanza and exact and holder(stanza) else
                       "package" if spec.fallback_artist else "unknown")
        title = info.get("title") or tags.get("title") or p.stem
        genre = spec.genre(rel) if callable(spec.genre) else spec.genre
        stem_rel = rel.rsplit(".", 1)[0] if "." in p.name else rel
        name = slug(p.parent.name if p.stem == "song" else re.split(r"(?:^|/)music/", stem_rel)[-1])
        while name in used:
            name += "_"
        used.add(name)
        dest = dest_dir / f"{name}.{fmt}"
        lic = (tags.get("license") or info.get("license")
               or ((stanza or {}).get("license", "").splitlines() or [""])[0] or "see copyright.txt")
        credits = [f"title: {title}", f"artist: {artist} (from {artist_from})", f"album: {tags.get('album', '')}",
                   f"package: {pkg} {version} (Debian)", f"source: {src_rel}", f"licence: {lic}"]
        if tags.get("copyright"):
            credits.append(f"tag copyright: {tags['copyright']}")
        if stanza:
            credits += ["", "Debian copyright stanza:"] + [f"{k.capitalize()}: {v}" for k, v in stanza.items()]
        credits += ["", f"Full licence text: {pkg}/copyright.txt (/usr/share/doc/{pkg}/copyright)"]
        (dest_dir / f"{name}.credits.txt").write_text("\n".join(credits) + "\n")
        rows.append({"file": f"{pkg}/{dest.name}", "artist": artist, "genre": genre, "lyrics": "", "package": pkg,
                     "title": title, "album": tags.get("album", "") or info.get("album", ""), "source": src_rel,
                     "artist_from": artist_from})
        stems = tuple(str(q) for q in sorted(p.parent.glob("*.ogg")) if q != p) if "songini" in spec.hints else ()
        if stems:
            rows[-1]["stems_mixed"] = " + ".join(q.rsplit("/", 1)[-1] for q in stems)
        jobs_in.append((str(p), str(dest), sr, fmt, min_seconds, stems, reuse))
    kept = []
    with ProcessPoolExecutor(max_workers=max(1, jobs)) as pool:
        for row, (dest, seconds, why) in zip(rows, pool.map(convert, jobs_in)):
            if seconds is None:
                print(f"[{pkg}] skip {row['source']}: {why}", flush=True)
                Path(dest).with_suffix(".credits.txt").unlink(missing_ok=True)
                continue
            row["seconds"] = f"{seconds:.2f}"
            kept.append(row)
    (dest_dir / ".done.json").write_text(json.dumps({"package": pkg, "version": version, "sample_rate": sr,
                                                     "format": fmt, "rows": kept}, indent=1, ensure_ascii=False))
    hours = sum(float(r["seconds"]) for r in kept) / 3600
    print(f"[{pkg}] {len(kept)} tracks, {hours:.2f} h, {len({r['artist'] for r in kept})} artists", flush=True)
    return kept


def write_metadata(out: Path, seed: int, val_fraction: float) -> int:
    rows = []
    for done in sorted(out.glob("*/.done.json")):
        rows += json.loads(done.read_text())["rows"]
    cols = ["file", "artist", "genre", "lyrics", "split", "package", "title", "album", "seconds", "source",
            "artist_from", "stems_mixed"]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=cols, restval="")
    w.writeheader()
    for r in sorted(rows, key=lambda r: r["file"]):
        w.writerow({**r, "split": split_of(r["file"], seed, val_fraction)})
    tmp = out / ".metadata.csv.tmp"
    tmp.write_text(buf.getvalue(), encoding="utf-8")
    tmp.replace(out / "metadata.csv")
    return len(rows)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, type=Path, help="corpus folder to write (outside the repository)")
    ap.add_argument("--work", type=Path, default=None, help="downloads and unpacked packages (default OUT/../"
                    "corpus_work)")
    ap.add_argument("--packages", default=None, help="comma-separated subset (default: all, 0ad-data last)")
    ap.add_argument("--sample-rate", type=int, default=22050)
    ap.add_argument("--format", choices=("flac", "ogg"), default="flac")
    ap.add_argument("--min-seconds", type=float, default=30.0)
    ap.add_argument("--val-fraction", type=float, default=0.05)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2, help="parallel decodes")
    ap.add_argument("--redo", action="store_true", help="rebuild packages already done")
    ap.add_argument("--relabel", action="store_true", help="redo labels and credits of packages already done, "
                    "keeping their audio files")
    args = ap.parse_args(argv)
    pkgs = list(PACKAGES) if not args.packages else [p.strip() for p in args.packages.split(",") if p.strip()]
    unknown = [p for p in pkgs if p not in PACKAGES]
    if unknown:
        ap.error(f"unknown packages {unknown}; choose from {', '.join(PACKAGES)}")
    repo = Path(__file__).resolve().parents[1]
    out = args.out.resolve()
    if out == repo or repo in out.parents:
        ap.error(f"--out {out} is inside the repository; the corpus must stay outside it")
    work = (args.work or out.parent / "corpus_work").resolve()
    out.mkdir(parents=True, exist_ok=True)
    for pkg in pkgs:
        done = out / pkg / ".done.json"
        if done.exists() and not args.redo and not args.relabel:
            d = json.loads(done.read_text())
            if d.get("sample_rate") == args.sample_rate and d.get("format") == args.format:
                print(f"[{pkg}] done already ({len(d['rows'])} tracks); --redo rebuilds it", flush=True)
                continue
        if (args.redo or done.exists()) and not args.relabel:
            for f in (out / pkg).glob("*"):
                f.unlink()
        try:
            build_package(pkg, out, work, args.sample_rate, args.format, args.min_seconds, args.jobs,
                          reuse=args.relabel)
        except (subprocess.CalledProcessError, OSError, zipfile.BadZipFile) as e:
            print(f"[{pkg}] failed: {e}", file=sys.stderr, flush=True)
    n = write_metadata(out, args.seed, args.val_fraction)
    print(f"wrote {out / 'metadata.csv'} ({n} tracks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
