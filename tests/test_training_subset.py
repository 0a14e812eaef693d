"""recipes/select_training_subset.py: the default model's top-prior subset (pack first, genre cap, seeded order)."""

import csv
import subprocess
import sys

from conftest import REPO, load_script

subset = load_script("select_training_subset")


def _rows():
    rows = []
    for g, n in (("ambient", 6), ("folk", 6), ("rock", 2)):
        for i in range(n):
            rows.append({"file": f"pkg{g}/{g}{i}.flac", "artist": f"a{i % 2}", "genre": g, "lyrics": "",
                         "split": "train", "seconds": "1800"})
    rows.append({"file": "pkgfolk/held.flac", "artist": "a0", "genre": "folk", "lyrics": "", "split": "validation",
                 "seconds": "60"})
    return rows


def test_select_keeps_pack_caps_genres_and_is_seeded():
    rows = _rows()
    pack_files = {"pkgfolk/folk5", "pkgfolk/folk4", "pkgfolk/folk3", "pkgfolk/folk2"}
    pack = {subset.track_key(f"audio/{f.replace('/', '__')}.ogg") for f in pack_files}
    chosen = subset.select(rows, pack, hours_per_genre=1.0, seed=0)
    files = [r["file"].rsplit(".", 1)[0] for r in chosen]
    # every pack track, first, even past the genre's cap (4 x 0.5 h of folk > 1 h)
    assert set(files[:4]) == pack_files
    assert sum(r["genre"] == "folk" for r in chosen) == 4
    # other genres: added while under the cap -> 2 tracks of 0.5 h reach 1 h
    assert sum(r["genre"] == "ambient" for r in chosen) == 2
    assert sum(r["genre"] == "rock" for r in chosen) == 2
    assert all(r["split"] == "train" for r in chosen)
    assert subset.select(rows, pack, 1.0, seed=0) == chosen
    others = [r["file"] for r in chosen if r["genre"] == "ambient"]
    assert any([r["file"] for r in subset.select(rows, pack, 1.0, seed=s) if r["genre"] == "ambient"] != others
               for s in range(1, 6))


def test_cli_writes_links_and_metadata_and_refuses_a_full_folder(tmp_path):
    corpus, pack, out = tmp_path / "corpus", tmp_path / "pack", tmp_path / "subset"
    rows = _rows()
    for r in rows:
        (corpus / r["file"]).parent.mkdir(parents=True, exist_ok=True)
        (corpus / r["file"]).write_bytes(b"x")
    with open(corpus / "metadata.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    pack.mkdir()
    (pack / "metadata.csv").write_text("file,artist,genre,lyrics,split\naudio/pkgrock__rock0.ogg,a0,rock,,train\n")
    cmd = [sys.executable, str(REPO / "recipes" / "select_training_subset.py"), "--corpus", str(corpus), "--pack",
           str(pack), "--out", str(out), "--hours-per-genre", "1"]
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    got = list(csv.DictReader(open(out / "metadata.csv")))
    assert got[0]["file"] == "pkgrock/rock0.flac" and len(got) == 6
    assert all((out / r["file"]).is_symlink() and (out / r["file"]).resolve() == (corpus / r["file"]).resolve()
               for r in got)
    res = subprocess.run(cmd, capture_output=True, text=True)
    assert res.returncode != 0 and "not empty" in res.stderr
