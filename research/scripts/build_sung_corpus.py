#!/usr/bin/env python
"""Build a synthetic sung-song corpus for lyrics conditioning (issue 10).

Every song is made from scratch, deterministically from ``--seed`` and its index:

* **Lyrics**: a seeded phrase grammar over a few hundred common English words (festival's lexicon gives each
  word's syllable count), rhymed lines (AABB/ABAB/ABCB), verse / chorus / verse / chorus structure. Songs of the
  held-out split (``test``, every 10th song) use lyric lines that never occur in a training or validation song,
  and vice versa.
* **Melody**: a generated tune in a random major/minor key over a I-V-vi-IV style progression, one note per
  syllable, chord tones on the beat, a long note and a rest at each line end.
* **Singing**: Debian ``festival`` in singing mode (``text2wave -mode singing``) with the voices ``kal`` and
  ``ked`` as the two artists; a hook records each word's real start/end from festival's segment times.
* **Accompaniment** ("genres"): MIDI written with ``mido`` in five styles (piano, guitar, strings, organ, band
  with drums) and rendered with FluidSynth + FluidR3_GM; one bar of intro and outro.
* **Mix**: vocals and accompaniment at 22050 Hz mono (``soxr``), accompaniment 5-10 dB below the vocals (RMS),
  peak-normalised to -1 dBFS, written as FLAC with the stems and a timing JSON per song.

Layout of ``--out`` (default ``/work/sung_corpus``)::

    songs/<id>.flac + songs/metadata.csv      train + validation songs: ``jukebox train ... --data OUT/songs``
    heldout/<id>.flac + heldout/metadata.csv  held-out songs (lyrics never seen in training), no split column
    stems/vocals/<id>.flac, stems/accomp/<id>.flac
    timing/<id>.json                          labels, lyrics, score and each word's start/end seconds in the mix
    catalog.csv                               every song: file, artist, genre, lyrics, split (train/validation/test)

Tools (recipe tools, not package dependencies)::

    apt-get install festival festvox-kallpc16k festvox-kdlpc16k fluidsynth fluid-soundfont-gm
    pip install mido soxr soundfile numpy pocketsphinx   # pocketsphinx: research/scripts/sung_wer.py

Usage: ``python research/scripts/build_sung_corpus.py --songs 200 --workers 2``. Rerunning skips finished songs (a
song is
finished when its timing JSON exists; it is written last), and songs ``0..N-1`` are the same for any ``--songs``
>= N, so a corpus can be grown.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from xml.sax.saxutils import escape

SR = 22050
ARTISTS = {"kal": "voice_kal_diphone", "ked": "voice_ked_diphone"}
GENRES = ("piano", "guitar", "strings", "organ", "band")
SOUNDFONT = "/usr/share/sounds/sf2/FluidR3_GM.sf2"
DTD_DIR = Path("/usr/share/sgml/festival")
DTD_FILES = ("Singing.v0_1.dtd", "sable-latin.ent")

# ------------------------------------------------------------------------------------------------ vocabulary
# Common, concrete song words by part of speech. Rhyme groups supply line endings (nouns and adjectives).
_W = {
    "noun": """love heart night day light dream fire rain river road sky sea sun moon star wind song door home town
        city morning evening window garden mountain valley ocean summer winter autumn spring storm shadow flower
        tree field stone bridge train ship letter picture story secret promise memory island desert forest
        candle mirror ribbon diamond silver thunder lightning harbor meadow kingdom castle village highway
        bottle pocket jacket engine circle corner table chair river wave shore hill lake snow cloud bird horse
        dog cat child friend lover stranger sailor soldier singer dancer drummer farmer baby mother father
        brother sister angel devil money paper letter radio guitar piano drum bell clock hour minute moment
        season number colour voice word name face hand eye smile tear kiss heaven world ground water honey
        sugar coffee whisky apple orange lemon cherry bread wine kitchen"""
    .split(),
    "adj": """blue red green golden silver empty broken quiet gentle wild lonely happy young old cold warm bright
        dark sweet bitter tender heavy little long wide open hidden holy lucky simple secret yellow purple
        silent distant early lazy crazy easy hungry sleepy pretty handsome magic electric endless careless
        perfect sudden restless velvet wooden painted faded frozen burning shining rolling falling""".split(),
    "verb": """love hold find keep call need know feel see hear miss want take leave follow carry wait remember
        forget believe dance sing play run walk drive fly fall rise shine burn break mend build open close
        touch kiss chase catch throw turn stay wander whisper answer travel borrow promise""".split(),
    "verb_past": """loved held found kept called needed knew felt saw heard missed wanted took left followed
        carried waited remembered forgot believed danced sang played ran walked drove flew fell rose burned
        broke built opened closed touched kissed chased caught threw turned stayed wandered whispered
        answered travelled""".split(),
    "verb_ing": """loving holding finding calling waiting dancing singing playing running walking driving flying
        falling rising shining burning turning wandering dreaming crying laughing sleeping talking breathing
        drifting""".split(),
    "adv": """tonight today again forever slowly softly gently always never together alone away home somehow
        someday tomorrow""".split(),
    "prep": "in on under over through across along beyond behind beside above below near into".split(),
    "det": "the my your our a this that every".split(),
    "subj": "I you we they".split(),
    "name": "Mary Johnny Rosie Billy Annie Lucy Jimmy Molly Sally Tommy".split(),
}
RHYMES: tuple[tuple[str, ...], ...] = (
    ("night", "light", "bright", "flight", "sight", "white", "tight", "right"),
    ("day", "way", "play", "stay", "gray", "bay", "away", "say"),
    ("heart", "start", "apart", "part", "art", "cart", "dark"),
    ("rain", "train", "lane", "chain", "again", "pain", "plain", "window pane"),
    ("sea", "tree", "free", "me", "key", "bee", "sea breeze"),
    ("fire", "wire", "higher", "choir", "desire", "tire"),
    ("dream", "stream", "gleam", "team", "cream", "seam"),
    ("sky", "high", "goodbye", "eye", "fly", "pie", "lullaby"),
    ("door", "floor", "shore", "more", "before", "core"),
    ("sun", "run", "one", "fun", "done", "gun", "everyone"),
    ("ground", "sound", "round", "found", "town", "crown", "down"),
    ("home", "alone", "stone", "bone", "phone", "unknown"),
    ("song", "long", "strong", "along", "wrong", "belong"),
    ("moon", "soon", "tune", "june", "spoon", "balloon", "afternoon"),
    ("blue", "true", "you", "new", "through", "shoe", "view"),
    ("time", "rhyme", "line", "mine", "wine", "shine", "climb"),
    ("hand", "land", "sand", "band", "stand", "grand", "understand"),
    ("rose", "goes", "snows", "close", "knows", "clothes", "shows"),
)

# Line templates: slots are parts of speech; the last slot (``R``) is the rhyme word. Literal words are lower case.
TEMPLATES: tuple[str, ...] = (
    "subj verb_past det adj R",
    "det adj noun is R",
    "subj verb det noun R",
    "prep det adj noun we verb_past R",
    "subj will verb det noun R",
    "verb_ing prep det adj R",
    "oh name verb det R",
    "det noun prep det R",
    "subj verb_past adv prep det R",
    "adj noun and adj R",
    "I am verb_ing prep det R",
    "the noun is verb_ing prep det R",
    "subj can verb the adj R",
    "and subj verb_past adv to the R",
    "name verb_past det noun prep the R",
    "subj never verb_past det adj R",
    "all the noun prep det R",
    "come and verb det noun tonight R",
)
SCHEMES = ("AABB", "ABAB", "ABCB", "AAAA")


def vocabulary() -> list[str]:
    """Every word the grammar can produce (lower case), including the template literals."""
    words: set[str] = set()
    for lst in _W.values():
        words.update(w.lower() for w in lst)
    for group in RHYMES:
        for phrase in group:
            words.update(phrase.split())
    for t in TEMPLATES:
        words.update(tok for tok in t.split() if tok not in _W and tok != "R")
    return sorted(words)


def heuristic_syllables(word: str) -> int:
    """Vowel-group syllable count (fallback when festival's lexicon is not at hand, e.g. in tests)."""
    w = word.lower().strip("'")
    groups = re.findall(r"[aeiouy]+", w)
    n = len(groups)
    if w.endswith("e") and not w.endswith(("le", "ee")) and n > 1:
        n -= 1
    return max(1, n)


def festival_syllables(words: Sequence[str]) -> dict[str, int]:
    """Syllable counts of ``words`` from festival's lexicon, with both voices; words where they differ are dropped."""
    quoted = " ".join(f'"{w}"' for w in words)
    counts: dict[str, dict[str, int]] = {}
    for artist, voice in ARTISTS.items():
        script = (
            '(load (path-append datadir "init.scm"))\n'
            f"({voice})\n"
            "(mapcar (lambda (w) (format t \"%s %d\\n\" w"
            f" (length (car (cdr (cdr (lex.lookup w nil))))))) '({quoted}))\n"
        )
        with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
            f.write(script)
        try:
            out = subprocess.run(["festival", "--script", f.name], capture_output=True, text=True, check=True).stdout
        finally:
            os.unlink(f.name)
        counts[artist] = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if line.strip()}
    kal, ked = counts["kal"], counts["ked"]
    return {w: kal[w] for w in words if w in kal and kal.get(w) == ked.get(w) and kal[w] > 0}


# ---------------------------------------------------------------------------------------------------- lyrics
@dataclass
class Song:
    """One song's labels and score (everything but the audio)."""

    index: int
    song_id: str
    split: str  # train / validation / test
    artist: str
    genre: str
    bpm: int
    tonic: int  # MIDI pitch class of the key
    minor: bool
    progression: list[int]  # scale degrees (0-based) of the 4-chord loop
    sections: list[tuple[str, list[str]]]  # ("verse"|"chorus", lines)
    seed: int
    notes: list[dict] = field(default_factory=list)  # filled by make_score

    @property
    def lyrics(self) -> str:
        """Lyrics as sung, one line per sung line, a blank line between sections."""
        return "\n\n".join("\n".join(lines) for _, lines in self.sections)


def split_of(index: int) -> str:
    """Deterministic split by song index: every 10th song held out (test), every 20th (offset 4) validation."""
    if index % 10 == 9:
        return "test"
    if index % 20 == 4:
        return "validation"
    return "train"


class LyricGenerator:
    """Seeded phrase grammar producing rhymed verse/chorus lyrics; keeps held-out lines disjoint from the rest.

    Songs must be generated in index order (``song(i)`` for i = 0, 1, ...): the line sets of the held-out and
    training songs grow as songs are made, and a line already used by the other side is rejected.
    """

    def __init__(self, syllables: dict[str, int], seed: int = 0) -> None:
        self.syl = syllables
        self.seed = seed
        self.used: dict[str, set[str]] = {"test": set(), "seen": set()}
        self.words = {k: [w for w in v if w.lower() in syllables] for k, v in _W.items()}
        self.rhymes = [[p for p in g if all(w in syllables for w in p.split())] for g in RHYMES]
        self.rhymes = [g for g in self.rhymes if len(g) >= 3]

    def syllable_count(self, line: str) -> int:
        """Syllables of a line."""
        return sum(self.syl[w.lower()] for w in line.split())

    def _line(self, rng: random.Random, rhyme: str, lo: int = 5, hi: int = 11) -> str:
        for _ in range(200):
            template = rng.choice(TEMPLATES)
            out = []
            for tok in template.split():
                if tok == "R":
                    out.append(rhyme)
                elif tok in self.words:
                    out.append(rng.choice(self.words[tok]))
                else:
                    out.append(tok)
            out = ["I" if w == "i" else w for w in out]
            line = " ".join(out)
            line = line[0].upper() + line[1:]
            if lo <= self.syllable_count(line) <= hi:
                return line
        return line

    def _stanza(self, rng: random.Random, side: str, n_lines: int = 4) -> list[str]:
        scheme = rng.choice(SCHEMES)
        groups: dict[str, list[str]] = {}
        lines: list[str] = []
        for letter in scheme[:n_lines]:
            if letter not in groups:
                taken = [g for g in groups.values()]
                pool = [g for g in self.rhymes if g not in taken]
                groups[letter] = list(rng.choice(pool))
                rng.shuffle(groups[letter])
            for _ in range(100):
                group = groups[letter]
                rhyme = group.pop() if len(group) > 1 else group[0]
                line = self._line(rng, rhyme)
                other = "seen" if side == "test" else "test"
                if line not in self.used[other] and line not in lines:
                    break
            lines.append(line)
        return lines

    def song(self, index: int) -> tuple[str, list[tuple[str, list[str]]]]:
        """Split and sections (verse 1, chorus, verse 2, chorus [, verse 3, chorus]) of song ``index``."""
        split = split_of(index)
        side = "test" if split == "test" else "seen"
        rng = random.Random(f"lyrics-{self.seed}-{index}")
        chorus = self._stanza(rng, side)
        n_verses = rng.choice((2, 2, 3))
        sections: list[tuple[str, list[str]]] = []
        for _ in range(n_verses):
            sections.append(("verse", self._stanza(rng, side)))
            sections.append(("chorus", chorus))
        for _, lines in sections:
            self.used[side].update(lines)
        return split, sections


def make_songs(n: int, syllables: dict[str, int], seed: int = 0) -> list[Song]:
    """Labels, lyrics and musical parameters of songs ``0..n-1`` (no audio)."""
    gen = LyricGenerator(syllables, seed)
    songs = []
    for i in range(n):
        split, sections = gen.song(i)
        rng = random.Random(f"music-{seed}-{i}")
        minor = rng.random() < 0.3
        prog = rng.choice([[0, 4, 5, 3], [0, 3, 4, 0], [5, 3, 0, 4], [0, 5, 3, 4], [0, 3, 0, 4]])
        if minor:
            prog = rng.choice([[0, 5, 2, 6], [0, 3, 4, 0], [0, 6, 5, 4]])
        songs.append(Song(
            index=i, song_id=f"song{i:05d}", split=split, artist=rng.choice(sorted(ARTISTS)),
            genre=rng.choice(GENRES), bpm=rng.randrange(76, 128, 4), tonic=rng.randrange(12), minor=minor,
            progression=prog, sections=sections, seed=rng.randrange(2**31),
        ))
    return songs


# ----------------------------------------------------------------------------------------------------- score
MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)


def _scale_pitches(song: Song, lo: int = 55, hi: int = 74) -> list[int]:
    steps = MINOR if song.minor else MAJOR
    return [p for p in range(lo, hi + 1) if (p - song.tonic) % 12 in steps]


def chord_pitches(song: Song, degree: int) -> list[int]:
    """Pitch classes of the triad on scale ``degree``."""
    steps = MINOR if song.minor else MAJOR
    return [(song.tonic + steps[(degree + k) % 7]) % 12 for k in (0, 2, 4)]


def make_score(song: Song, syllables: dict[str, int]) -> list[dict]:
    """One note per syllable: ``[{word, word_index, line_index, syl, n_syl, pitch, start, dur}]`` in beats, plus
    rests implied by gaps. Each line spans two 4/4 bars (four when it has many syllables); chords change per bar."""
    rng = random.Random(song.seed)
    scale = _scale_pitches(song)
    notes: list[dict] = []
    beat = 0.0
    prev = min(scale, key=lambda p: abs(p - 64 - song.tonic % 12))
    word_index = 0
    line_index = 0
    for _, lines in song.sections:
        for line in lines:
            words = line.split()
            syls = [(w, k, syllables[w.lower()]) for w in words for k in range(syllables[w.lower()])]
            n = len(syls)
            bars = 2 if n <= 9 else 3
            rest = rng.choice((1.0, 1.5, 2.0)) if bars == 2 else rng.choice((1.0, 2.0))
            units = int((bars * 4 - rest) * 2)  # half beats to sing
            units = max(units, n)
            dur = [1] * n
            extra = units - n
            dur[-1] += min(extra, rng.choice((2, 3, 4)))
            extra = units - sum(dur)
            while extra > 0:
                k = rng.randrange(n)
                if dur[k] < 3:
                    dur[k] += 1
                    extra -= 1
                elif all(d >= 3 for d in dur[:-1]):
                    dur[-1] += extra
                    extra = 0
            start = beat
            wi = word_index - 1
            for (w, k, ns), d in zip(syls, dur, strict=True):
                if k == 0:
                    wi += 1
                bar = int(start // 4)
                chord = chord_pitches(song, song.progression[bar % len(song.progression)])
                on_beat = abs(start - round(start)) < 1e-6
                cands = [p for p in scale if abs(p - prev) <= 4]
                weights = [(4.0 if p % 12 in chord and on_beat else 1.0) / (1 + abs(p - prev)) for p in cands]
                if (w, k) == syls[-1][:2]:
                    cands = [p for p in scale if p % 12 in chord and abs(p - prev) <= 7] or cands
                    weights = [1.0] * len(cands)
                pitch = rng.choices(cands, weights)[0]
                notes.append({"word": w, "word_index": wi, "line_index": line_index, "syl": k, "n_syl": ns,
                              "pitch": pitch, "start": start, "dur": d / 2})
                start += d / 2
                prev = pitch
            word_index = wi + 1
            line_index += 1
            beat += bars * 4
    return notes


NOTE_NAMES = ("C", "C#", "D", "Eb", "E", "F", "F#", "G", "Ab", "A", "Bb", "B")


def midi_to_name(pitch: int) -> str:
    """MIDI pitch -> festival note name (``C4`` = MIDI 60)."""
    return f"{NOTE_NAMES[pitch % 12]}{pitch // 12 - 1}"


def song_xml(notes: Sequence[dict], bpm: int) -> str:
    """Festival singing-mode XML: one DURATION/PITCH element per word (one beat/note per syllable), RESTs between.

    The DTD (``Singing.v0_1.dtd``) has to sit beside the written file. Festival's singing mode takes a beat as
    50/BPM seconds (``singing_bps = bpm / 50`` in singing-mode.scm), so the BPM attribute is ``bpm * 5/6``."""
    out = ['<?xml version="1.0"?>',
           '<!DOCTYPE SINGING PUBLIC "-//SINGING//DTD SINGING mark up//EN" "Singing.v0_1.dtd" []>',
           f'<SINGING BPM="{bpm * 50 / 60:g}">']
    t = 0.0
    i = 0
    while i < len(notes):
        j = i
        while j + 1 < len(notes) and notes[j + 1]["word_index"] == notes[i]["word_index"]:
            j += 1
        group = notes[i:j + 1]
        if group[0]["start"] > t + 1e-6:
            out.append(f'<REST BEATS="{group[0]["start"] - t:g}"></REST>')
        beats = ",".join(f"{n['dur']:g}" for n in group)
        pitches = ",".join(midi_to_name(n["pitch"]) for n in group)
        out.append(f'<DURATION BEATS="{beats}"><PITCH NOTE="{pitches}">{escape(group[0]["word"])}</PITCH></DURATION>')
        t = group[-1]["start"] + group[-1]["dur"]
        i = j + 1
    out.append("</SINGING>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------ MIDI
PROGRAMS = {"piano": (0, 32), "guitar": (25, 33), "strings": (48, 42), "organ": (19, 32), "band": (4, 33)}


def accompaniment_midi(song: Song, n_bars: int, path: Path) -> None:
    """Write the accompaniment (``n_bars`` of chords incl. one intro and one outro bar) as a type-1 MIDI file."""
    import mido

    rng = random.Random(song.seed + 1)
    tpb = 480
    mid = mido.MidiFile(type=1, ticks_per_beat=tpb)
    events: list[tuple[float, int, str, int, int]] = []  # (beat, channel, kind, note, velocity)

    def note(ch: int, pitch: int, start: float, dur: float, vel: int) -> None:
        events.append((start, ch, "note_on", pitch, vel))
        events.append((start + dur * 0.95, ch, "note_off", pitch, 0))

    prog, bass_prog = PROGRAMS[song.genre]
    for bar in range(n_bars):
        deg = 0 if bar in (0, n_bars - 1) else song.progression[(bar - 1) % len(song.progression)]
        pcs = chord_pitches(song, deg)
        root = pcs[0]
        voicing = sorted(48 + ((pc - 48) % 12) for pc in pcs)  # close triad from C3 up
        voicing = [p if p >= 52 else p + 12 for p in voicing]
        b0 = bar * 4.0
        last = bar == n_bars - 1
        if song.genre == "piano":
            if last or rng.random() < 0.3:
                for p in voicing:
                    note(0, p, b0, 4, 70)
            else:
                pattern = [voicing[0], voicing[1], voicing[2], voicing[1] + 0] * 2
                for k, p in enumerate(pattern):
                    note(0, p + (12 if k == 2 else 0), b0 + k * 0.5, 0.5, 62)
        elif song.genre == "guitar":
            for k in range(4 if not last else 1):
                for s, p in enumerate(voicing + [voicing[0] + 12]):
                    note(0, p, b0 + k + s * 0.03, 1 if not last else 4, 72 if k % 2 == 0 else 58)
        elif song.genre in ("strings", "organ"):
            for p in voicing + [voicing[0] + 12]:
                note(0, p, b0, 4, 60 if song.genre == "strings" else 55)
        else:  # band: electric piano offbeats + drums
            for k in range(4 if not last else 1):
                for p in voicing:
                    note(0, p, b0 + k + 0.5 * (not last), 0.5 if not last else 4, 60)
            for k in range(8 if not last else 1):
                note(9, 42, b0 + k * 0.5, 0.25, 60)  # closed hi-hat
            for k in (0, 2) if not last else (0,):
                note(9, 36, b0 + k, 0.5, 90)  # kick
            for k in (1, 3) if not last else ():
                note(9, 38, b0 + k, 0.5, 80)  # snare
        bass = 36 + (root - 36) % 12
        if last:
            note(1, bass, b0, 4, 80)
        else:
            note(1, bass, b0, 2, 80)
            note(1, bass + (7 if rng.random() < 0.5 else 0), b0 + 2, 2, 75)
    events.sort(key=lambda e: (e[0], e[2] == "note_on"))
    tracks = {ch: mido.MidiTrack() for ch in sorted({e[1] for e in events})}
    meta = mido.MidiTrack()
    meta.append(mido.MetaMessage("set_tempo", tempo=mido.bpm2tempo(song.bpm), time=0))
    mid.tracks.append(meta)
    for ch, tr in tracks.items():
        if ch != 9:
            tr.append(mido.Message("program_change", channel=ch, program=prog if ch == 0 else bass_prog, time=0))
        mid.tracks.append(tr)
    last_tick = dict.fromkeys(tracks, 0)
    for beat, ch, kind, pitch, vel in events:
        tick = int(round(beat * tpb))
        tracks[ch].append(mido.Message(kind, channel=ch, note=pitch, velocity=vel, time=tick - last_tick[ch]))
        last_tick[ch] = tick
    mid.save(str(path))


# ---------------------------------------------------------------------------------------------------- render
_HOOK = """
(defvar words_out "{words}")
(defvar words_offset 0.0)
(define (record_words utt)
  (let ((fd (fopen words_out "a")))
    (mapcar (lambda (w)
      (format fd "%s %f %f\\n" (item.name w)
        (+ words_offset (item.feat w "R:SylStructure.daughter1.daughter1.R:Segment.segment_start"))
        (+ words_offset (item.feat w "R:SylStructure.daughtern.daughtern.R:Segment.end"))))
      (utt.relation.items utt 'Word))
    (fclose fd))
  (set! words_offset (+ words_offset (/ (get_param 'num_samples (wave.info (utt.wave utt)) 0)
                                        (get_param 'sample_rate (wave.info (utt.wave utt)) 16000))))
  utt)
(set! tts_hooks (list utt.synth record_words save_record_wave_fp))
"""


def sing(xml: str, artist: str, workdir: Path) -> tuple[object, int, list[tuple[str, float, float]]]:
    """Sing ``xml`` with festival; returns (audio float32, sample rate, [(word, start, end)] in seconds)."""
    import soundfile as sf

    for name in DTD_FILES:
        if not (workdir / name).exists():
            shutil.copy(DTD_DIR / name, workdir / name)
    (workdir / "song.xml").write_text(xml, encoding="utf-8")
    words_file = workdir / "words.txt"
    words_file.unlink(missing_ok=True)
    (workdir / "hook.scm").write_text(_HOOK.format(words=words_file.as_posix()), encoding="utf-8")
    cmd = ["text2wave", "-mode", "singing", "-eval", f"({ARTISTS[artist]})", "-eval", "hook.scm", "song.xml",
           "-o", "vocals.wav"]
    subprocess.run(cmd, cwd=workdir, check=True, capture_output=True, timeout=600)
    audio, sr = sf.read(workdir / "vocals.wav", dtype="float32")
    words = []
    for line in words_file.read_text().splitlines():
        w, s, e = line.rsplit(" ", 2)
        words.append((w, float(s), float(e)))
    return audio, sr, words


def render_midi(midi: Path, wav: Path) -> None:
    """Render ``midi`` with FluidSynth (gain 0.2: above it FluidR3 clips) at 44.1 kHz."""
    subprocess.run(["fluidsynth", "-ni", "-q", "-g", "0.2", "-r", "44100", "-F", str(wav), SOUNDFONT, str(midi)],
                   check=True, capture_output=True, timeout=600)


def _rms(x: object) -> float:
    import numpy as np

    x = np.asarray(x)
    active = x[np.abs(x) > 1e-3 * (np.abs(x).max() + 1e-9)]
    return float(np.sqrt(np.mean(active**2))) if active.size else 1e-9


def build_song(song: Song, syllables: dict[str, int], out: Path) -> dict:
    """Render one song (vocals, accompaniment, mix, timing) into ``out``; returns its timing record."""
    import numpy as np
    import soundfile as sf
    import soxr

    notes = make_score(song, syllables)
    spb = 60.0 / song.bpm
    intro = 4 * spb
    n_beats = max(n["start"] + n["dur"] for n in notes)
    n_bars = int(np.ceil(n_beats / 4)) + 2
    folder = "heldout" if song.split == "test" else "songs"
    with tempfile.TemporaryDirectory(prefix=f"{song.song_id}-") as tmp:
        work = Path(tmp)
        vocals, vsr, sung = sing(song_xml(notes, song.bpm), song.artist, work)
        accompaniment_midi(song, n_bars, work / "acc.mid")
        render_midi(work / "acc.mid", work / "acc.wav")
        acc, asr = sf.read(work / "acc.wav", dtype="float32")
    if acc.ndim == 2:
        acc = acc.mean(axis=1)
    if vocals.ndim == 2:
        vocals = vocals.mean(axis=1)
    vocals = soxr.resample(vocals, vsr, SR).astype(np.float32)
    acc = soxr.resample(acc, asr, SR).astype(np.float32)
    rng = random.Random(song.seed + 2)
    acc_db = rng.uniform(-10.0, -5.0)
    acc *= (_rms(vocals) / _rms(acc)) * 10 ** (acc_db / 20)
    n = max(len(acc), int(intro * SR) + len(vocals))
    voc_full = np.zeros(n, np.float32)
    voc_full[int(intro * SR):int(intro * SR) + len(vocals)] = vocals
    acc_full = np.zeros(n, np.float32)
    acc_full[:len(acc)] = acc
    mix = voc_full + acc_full
    gain = 0.89 / (np.abs(mix).max() + 1e-9)
    mix, voc_full, acc_full = mix * gain, voc_full * gain, acc_full * gain

    # word timing: festival's (real) segment times, score times alongside
    score_words: list[dict] = []
    for nt in notes:
        if nt["syl"] == 0:
            score_words.append({"word": nt["word"], "line": nt["line_index"], "score_start": nt["start"] * spb + intro,
                                "score_end": (nt["start"] + nt["dur"]) * spb + intro, "pitches": [nt["pitch"]]})
        else:
            score_words[-1]["score_end"] = (nt["start"] + nt["dur"]) * spb + intro
            score_words[-1]["pitches"].append(nt["pitch"])
    if len(sung) != len(score_words):
        raise RuntimeError(f"{song.song_id}: festival sang {len(sung)} words, score has {len(score_words)}")
    for sw, (_w, s, e) in zip(score_words, sung, strict=True):
        sw["start"], sw["end"] = round(s + intro, 4), round(e + intro, 4)
        sw["score_start"], sw["score_end"] = round(sw["score_start"], 4), round(sw["score_end"], 4)

    for sub, audio in ((folder, mix), ("stems/vocals", voc_full), ("stems/accomp", acc_full)):
        (out / sub).mkdir(parents=True, exist_ok=True)
        tmp_path = out / sub / f".{song.song_id}.tmp.flac"
        sf.write(tmp_path, audio, SR, format="FLAC", subtype="PCM_16")
        tmp_path.replace(out / sub / f"{song.song_id}.flac")
    record = {
        "file": f"{folder}/{song.song_id}.flac", "artist": song.artist, "genre": song.genre, "split": song.split,
        "lyrics": song.lyrics, "duration": round(n / SR, 3), "sample_rate": SR, "bpm": song.bpm,
        "key": f"{NOTE_NAMES[song.tonic]} {'minor' if song.minor else 'major'}", "accomp_db": round(acc_db, 2),
        "intro": round(intro, 4), "words": score_words,
        "song": {k: v for k, v in asdict(song).items() if k not in ("notes", "sections")},
        "sections": [{"kind": k, "lines": v} for k, v in song.sections],
    }
    (out / "timing").mkdir(parents=True, exist_ok=True)
    tmp_json = out / "timing" / f".{song.song_id}.tmp.json"
    tmp_json.write_text(json.dumps(record, indent=1), encoding="utf-8")
    tmp_json.replace(out / "timing" / f"{song.song_id}.json")
    return record


def _worker(args: tuple[Song, dict[str, int], str]) -> tuple[str, float, str]:
    song, syl, out = args
    t0 = time.time()
    try:
        rec = build_song(song, syl, Path(out))
        return song.song_id, rec["duration"], f"{time.time() - t0:.1f}s"
    except Exception as exc:  # noqa: BLE001 - report and carry on; a rerun retries the song
        return song.song_id, 0.0, f"FAILED {type(exc).__name__}: {exc}"


def write_metadata(out: Path) -> dict:
    """(Re)write catalog.csv, songs/metadata.csv and heldout/metadata.csv from the timing JSONs; return stats."""
    records = [json.loads(p.read_text()) for p in sorted((out / "timing").glob("song*.json"))]
    cols = ("file", "artist", "genre", "lyrics", "split")
    with open(out / "catalog.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for r in records:
            w.writerow([r[c] for c in cols])
    for folder, keep_split in (("songs", True), ("heldout", False)):
        rows = [r for r in records if r["file"].startswith(folder + "/")]
        if not rows:
            continue
        with open(out / folder / "metadata.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            use = cols if keep_split else cols[:-1]
            w.writerow(use)
            for r in rows:
                w.writerow([r["file"].split("/", 1)[1]] + [r[c] for c in use[1:]])
    stats: dict = {"songs": len(records), "hours": round(sum(r["duration"] for r in records) / 3600, 3)}
    for key in ("split", "artist", "genre"):
        hours: Counter = Counter()
        count: Counter = Counter()
        for r in records:
            hours[r[key]] += r["duration"] / 3600
            count[r[key]] += 1
        stats[key] = {k: {"songs": count[k], "hours": round(hours[k], 3)} for k in sorted(count)}
    stats["words"] = sum(len(r["words"]) for r in records)
    (out / "stats.json").write_text(json.dumps(stats, indent=1))
    return stats


def load_syllables(out: Path) -> dict[str, int]:
    """Festival syllable counts of the vocabulary, cached in ``out/syllables.json``."""
    cache = out / "syllables.json"
    vocab = vocabulary()
    if cache.exists():
        data = json.loads(cache.read_text())
        if sorted(data["vocabulary"]) == vocab:
            return data["syllables"]
    syl = festival_syllables(vocab)
    out.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps({"vocabulary": vocab, "syllables": syl}, indent=0))
    return syl


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, default=Path("/work/sung_corpus"))
    ap.add_argument("--songs", type=int, default=200, help="number of songs (index 0..N-1)")
    ap.add_argument("--hours", type=float, default=None, help="stop submitting once this many hours exist")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    for tool in ("text2wave", "festival", "fluidsynth"):
        if shutil.which(tool) is None:
            sys.exit(f"{tool} not found: apt-get install festival festvox-kallpc16k festvox-kdlpc16k fluidsynth "
                     "fluid-soundfont-gm")
    out: Path = args.out
    syl = load_syllables(out)
    songs = make_songs(args.songs, syl, args.seed)
    todo = [s for s in songs if not (out / "timing" / f"{s.song_id}.json").exists()]
    print(f"{len(songs)} songs, {len(songs) - len(todo)} done, {len(todo)} to build", flush=True)
    t0 = time.time()
    done_hours = 0.0
    with ProcessPoolExecutor(args.workers) as pool:
        futures = [pool.submit(_worker, (s, syl, str(out))) for s in todo]
        for k, fut in enumerate(as_completed(futures), 1):
            sid, dur, msg = fut.result()
            done_hours += dur / 3600
            print(f"[{k}/{len(todo)}] {sid} {dur:.1f}s audio {msg} ({time.time() - t0:.0f}s)", flush=True)
            if args.hours is not None and done_hours >= args.hours:
                for f in futures:
                    f.cancel()
    stats = write_metadata(out)
    print(json.dumps(stats, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
