#!/usr/bin/env bash
# The one entry point of Jingle-JAX: bash run_tpu_or_gpu.sh VERB [ARGS...]
#
#   setup          create or refresh .venv with the jax build for this machine
#   test           setup, then the test suite on two processes (ARGS go to pytest)
#   synth          python -m jingle_jax.synth ARGS (the demo's songs)
#   precompute     python -m precompute.encode ARGS (README: SLURM arrays)
#   verify         python -m jingle_jax.verify ARGS (every value of a dataset)
#   export-decoder python -m precompute.export_decoder ARGS
#   decode         python -m precompute.torch_decode ARGS (EnCodec in PyTorch)
#   decode-jax     python -m jingle_jax.decode ARGS (the JAX decoder)
#   train          python -m jingle_jax.train ARGS (one host; README: srun)
#   tensorboard    tensorboard ARGS (e.g. --logdir WORKDIR)
#   sample         python -m jingle_jax.sample --wav ARGS (latents and audio)
#   evaluate       python -m jingle_jax.evaluate ARGS (table and report.html)
#   arrange        python -m jingle_jax.arrange ARGS (two songs -> a wav)
#   serve          python -m jingle_jax.serve ARGS (the same in a browser page)
#   convert        python -m jingle_jax.convert_torch ARGS (an original .pt)
#   bench          python -m jingle_jax.bench ARGS (the train step's speed)
#   bench-torch    python benchmarks/torch_step.py ARGS (the original's step)
#   demo           synth, precompute (ENCODER=torch|jax), train, sample, evaluate

set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
VENV="${JINGLE_VENV:-$ROOT/.venv}"
PY="$VENV/bin/python"
cd "$ROOT"

say() { echo "[jingle-jax] $*" >&2; }

# PyTorch's OpenMP threads sleep when idle instead of spinning: read when
# torch loads, and 1.7x faster encoding on a shared CPU (docs/BENCHMARKS.md).
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"

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
  "$PY" -m pip install -q $requirement -e ".[precompute,serve,test]"
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
  local encoder=${ENCODER:-torch}
  say "encoding with EnCodec's $encoder encoder (ENCODER=torch|jax)"
  "$PY" -m jingle_jax.synth --out-dir "$run/audio"
  "$PY" -m precompute.encode --audio-dir "$run/audio" --out-dir "$run/latents" \
    --encoder "$encoder" "${weights[@]}"
  "$PY" -m jingle_jax.train --config configs/demo.py --workdir "$run/train" \
    --config.data.dir="$run/latents"
  "$PY" -m jingle_jax.sample --wav --workdir "$run/train" --num-samples 2 \
    --out-dir "$run/samples"
  "$PY" -m jingle_jax.evaluate --workdir "$run/train" --out-dir "$run/evaluation"
  say "listening report: $run/evaluation/report.html (open it in a browser)"
  say "evaluation table: $run/evaluation/metrics.md"
  say "training curves:  $run/evaluation/training_curves.png"
  say "decoded samples:  $run/samples/sample_*/{input,target,output}.wav"
  say "mask pictures:    $run/samples/sample_*/masks.png"
  say "TensorBoard:      bash run_tpu_or_gpu.sh tensorboard --logdir $run/train"
}

verb=${1:-}
[[ $# -gt 0 ]] && shift
case $verb in
  setup) setup ;;
  # Two test processes (JINGLE_TEST_WORKERS), each taking whole files: most
  # tests wait on one-threaded compiles. -n 0 runs them in this one.
  test) setup; exec "$PY" -m pytest -n "${JINGLE_TEST_WORKERS:-2}" --dist loadfile "$@" ;;
  synth) setup; exec "$PY" -m jingle_jax.synth "$@" ;;
  # Under srun or a SLURM array every task runs this line: set up once
  # beforehand, not racing.
  precompute) [[ -n ${SLURM_PROCID:-} && -x $PY ]] || setup
              exec "$PY" -m precompute.encode "$@" ;;
  verify) setup; exec "$PY" -m jingle_jax.verify "$@" ;;
  export-decoder) setup; exec "$PY" -m precompute.export_decoder "$@" ;;
  decode) setup; exec "$PY" -m precompute.torch_decode "$@" ;;
  decode-jax) setup; exec "$PY" -m jingle_jax.decode "$@" ;;
  # Under srun every task runs this line: set up once beforehand, not racing.
  train) [[ -n ${SLURM_PROCID:-} && -x $PY ]] || setup
         exec "$PY" -m jingle_jax.train "$@" ;;
  tensorboard) setup; exec "$VENV/bin/tensorboard" "$@" ;;
  sample) setup; exec "$PY" -m jingle_jax.sample --wav "$@" ;;
  evaluate) setup; exec "$PY" -m jingle_jax.evaluate "$@" ;;
  arrange) setup; exec "$PY" -m jingle_jax.arrange "$@" ;;
  serve) setup; exec "$PY" -m jingle_jax.serve "$@" ;;
  convert) setup; exec "$PY" -m jingle_jax.convert_torch "$@" ;;
  bench) setup; exec "$PY" -m jingle_jax.bench "$@" ;;
  bench-torch) setup; exec "$PY" benchmarks/torch_step.py "$@" ;;
  demo) setup; demo ;;
  # The comment block at the top, from its second line to its end.
  *) sed -n '2,/^$/s/^# \{0,1\}//p' "$0"; exit 2 ;;
esac
