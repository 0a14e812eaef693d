#!/usr/bin/env python3
"""The `jukebox` CLI with two experimental VQ-VAE presets for research/scripts/gpu_toplevel_experiment.sh (session 6):
``x512`` (default22k with hops 8/32/512) and ``x256`` (default22k with 256 codes per level).

    python research/scripts/vq_presets_cli.py train vqvae --preset x512 --data PACK --out DIR ...
"""

import dataclasses
import sys

from jukebox import config

_BASE = config.VQVAE_PRESETS["default22k"]
config.VQVAE_PRESETS["x512"] = dataclasses.replace(_BASE, downs_t=(3, 2, 4))
config.VQVAE_PRESETS["x256"] = dataclasses.replace(_BASE, l_bins=256)

if __name__ == "__main__":
    from jukebox.cli.main import main

    sys.exit(main(sys.argv[1:]))
