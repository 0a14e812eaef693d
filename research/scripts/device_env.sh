# Sourced by the GPU recipes (research/scripts/gpu_*.sh) from the repository root: the results folder $OUT (default out/),
# the wheels the GPU image lacks (soundfile, soxr, unidecode, cffi: carried in .whl/), PYTHONPATH, and $J (the CLI).
OUT=${OUT:-out}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import soundfile, soxr, unidecode" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site
elif [ -d /tmp/site ]; then
  export PYTHONPATH=/tmp/site  # installed by an earlier call on the same (warm) machine
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
J="python3 -m jukebox.cli.main"
