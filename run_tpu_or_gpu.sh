#!/usr/bin/env bash
# The one entry point of Jingle-JAX: bash run_tpu_or_gpu.sh VERB [ARGS...]
#
#   setup       create or refresh .venv with the jax build for this machine
#   test        setup, then the test suite (extra ARGS go to pytest)
#   precompute  python -m precompute.encode ARGS
#   decode      python -m precompute.decode ARGS
#   train       python -m jingle_jax.train ARGS (one host; see README for srun)
#   sample      python -m jingle_jax.sample --wav ARGS (latents and audio)
#   arrange     python -m precompute.arrange ARGS (two audio files -> a wav)
#   demo        synthesize demo songs -> precompute -> train -> sample -> decode
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${JINGLE_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
cd "$ROOT"

say() { echo "[jingle-jax] $*" >&2; }

detect_platform() {
  if [[ -e /dev/accel0 || -e /dev/vfio/0 || -n "${TPU_NAME:-}" ]]; then
    echo tpu
  elif command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
    echo gpu
  else
    echo cpu
  fi
}

# The jax requirement for this platform, or nothing when a working jax that
# sees the accelerator is already installed system-wide (kept as it is).
jax_requirement() {
  local platform=$1
  if [[ $platform != cpu ]] && python3 -c \
      "import jax, sys; sys.exit(jax.default_backend() == 'cpu')" 2>/dev/null; then
    return
  fi
  case $platform in
    tpu) echo "jax[tpu]" ;;
    gpu) echo "jax[cuda13]" ;;
    *) echo "jax" ;;
  esac
}

setup() {
  local platform requirement stamp
  platform=$(detect_platform)
  say "platform: $platform"
  requirement=$(jax_requirement "$platform")
  stamp="$platform|$requirement|$(cat setup.cfg pyproject.toml | sha256sum | cut -c1-16)"
  if [[ -x $PY && -f $VENV/.jingle-stamp && "$(cat "$VENV/.jingle-stamp")" == "$stamp" ]]; then
    say "environment up to date: $VENV"
    return
  fi
  if [[ ! -x $PY ]]; then
    if [[ -z $requirement ]]; then
      say "using the preinstalled jax ($(python3 -c 'import jax; print(jax.__version__)'))"
      python3 -m venv --system-site-packages "$VENV"
    else
      python3 -m venv "$VENV"
    fi
  fi
  "$PY" -m pip install -q --upgrade pip
  # shellcheck disable=SC2086
  "$PY" -m pip install -q $requirement -e ".[precompute,test]"
  echo "$stamp" > "$VENV/.jingle-stamp"
  say "environment ready: $VENV ($("$PY" -c 'import jax; print("jax", jax.__version__, jax.default_backend())'))"
}

demo() {
  local run=${DEMO_DIR:-$ROOT/runs/demo}
  local weights=()
  if "$PY" -m precompute.encodec_weights --check-pretrained >/dev/null 2>&1; then
    say "using the pretrained EnCodec weights"
  else
    say "WARNING: the pretrained EnCodec weights cannot be had here: using SEEDED"
    say "WARNING: RANDOM weights; decoded audio will be noise-like, not music"
    weights=(--random-encodec 0)
  fi
  "$PY" -m precompute.synth --out-dir "$run/audio"
  "$PY" -m precompute.encode --audio-dir "$run/audio" --out-dir "$run/latents" "${weights[@]}"
  "$PY" -m jingle_jax.train --config configs/demo.py --workdir "$run/train" \
    --config.data_dir="$run/latents"
  "$PY" -m jingle_jax.sample --wav --workdir "$run/train" --num-samples 2 \
    --out-dir "$run/samples"
  "$PY" -m jingle_jax.evaluate --workdir "$run/train" --out-dir "$run/evaluation"
  say "decoded samples:  $run/samples/sample_*/{input,target,output}.wav"
  say "mask pictures:    $run/samples/sample_*/masks.png"
  say "evaluation table: $run/evaluation/metrics.md"
  say "training curves:  $run/evaluation/training_curves.png"
  say "TensorBoard:      tensorboard --logdir $run/train  (pip install tensorboard)"
}

verb=${1:-}
[[ $# -gt 0 ]] && shift
case $verb in
  setup) setup ;;
  test) setup; exec "$PY" -m pytest "$@" ;;
  precompute) setup; exec "$PY" -m precompute.encode "$@" ;;
  decode) setup; exec "$PY" -m precompute.decode "$@" ;;
  # Under srun every task runs this line: set up once beforehand, not racing.
  train) [[ -n ${SLURM_PROCID:-} && -x $PY ]] || setup
         exec "$PY" -m jingle_jax.train "$@" ;;
  sample) setup; exec "$PY" -m jingle_jax.sample --wav "$@" ;;
  arrange) setup; exec "$PY" -m precompute.arrange "$@" ;;
  demo) setup; demo ;;
  *) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 2 ;;
esac
