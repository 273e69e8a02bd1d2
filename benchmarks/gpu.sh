#!/usr/bin/env bash
# Jingle-JAX's figures on one GPU machine, in about six minutes.
#
#   OUT=DIR [WHEELS=.whl] [DEADLINE=330] [FLAGS='--config.X=Y ...'] \
#       bash benchmarks/gpu.sh
#
# Uses the machine's own jax (CUDA), flax, optax, orbax-checkpoint, torch and
# torchaudio; what it lacks (ml_collections, tensorboardX, soundfile, cffi,
# pycparser, encodec) installs from the wheels in $WHEELS, fetched beforehand
# on a machine that reaches the package registry (docs/BENCHMARKS.md, "GPU
# script"). Most telling first: no new run starts after DEADLINE seconds.
# FLAGS are added to every run (smaller shapes try the script on a CPU).
# Writes into $OUT: env.txt, bench.jsonl (one line per bench run),
# top_ops.txt, train.jsonl, precompute.txt, encoder.txt, precompute_jax.txt,
# log.txt and summary.md.
set -u

OUT=${OUT:?set OUT to the results folder}
WHEELS=${WHEELS:-.whl}
DEADLINE=${DEADLINE:-330}
PY=${PY:-python3}
WORK=$(mktemp -d)
START=$(date +%s)
mkdir -p "$OUT"
cd "$(dirname "$0")/.."

log() { echo "[$(( $(date +%s) - START ))s] $*" | tee -a "$OUT/log.txt"; }
late() {
  if (( $(date +%s) - START > DEADLINE )); then
    log "skipped $1: past the ${DEADLINE}s deadline"
    return 0
  fi
  return 1
}

if [[ -d $WHEELS ]]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --target \
    "$WORK/site" "$WHEELS"/*.whl >> "$OUT/log.txt" 2>&1
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
    --format=csv
  git rev-parse HEAD 2>/dev/null
  $PY -c 'import jax, flax, optax; print("jax", jax.__version__, "flax",
flax.__version__, "optax", optax.__version__, jax.devices())'
} > "$OUT/env.txt" 2>&1
log "$(tail -1 "$OUT/env.txt")"

# The seed shapes (configs/creative.py) without the decoder in the step;
# each run adds its own flags.
# shellcheck disable=SC2206
SEED=(--config configs/creative.py --config.loss.spectral_outlier_weight=0
      ${FLAGS:-})

bench() {  # NAME TIMEOUT FLAGS...: one line of bench.jsonl
  local name=$1 seconds=$2
  shift 2
  late "$name" && return
  log "bench $name: $*"
  timeout "$seconds" $PY -m jingle_jax.bench "$@" > "$WORK/$name.out" \
    2> "$WORK/$name.err"
  local status=$?
  local line
  line=$(grep '^{' "$WORK/$name.out" | tail -1)
  if [[ -n $line ]]; then
    echo "{\"run\": \"$name\", ${line#\{}" >> "$OUT/bench.jsonl"
  else
    log "bench $name failed (exit $status): $(tail -3 "$WORK/$name.err")"
  fi
}

# 1. The seed recipe's shapes with the fused kernels, profiled; then again,
#    from the compilation cache.
bench fused 180 "${SEED[@]}" --config.model.attention_impl=fused \
  --profile "$WORK/profile"
cp "$WORK/profile/top_ops.txt" "$OUT/top_ops.txt" 2>/dev/null
bench fused_cached 90 "${SEED[@]}" --config.model.attention_impl=fused

# 2. The training loop at the same shapes: 300 steps on random latents.
if ! late train; then
  log 'train: 300 steps of jingle_jax.train'
  $PY - "$WORK/latents" <<'PYTHON' >> "$OUT/log.txt" 2>&1
import sys
import numpy as np
from jingle_jax.data import latent_writer
writer = latent_writer.DatasetWriter(sys.argv[1], encodec_weights='random:0',
                                     dtype='float16', keep_audio=False)
rng, records = np.random.default_rng(0), []
for index in range(50):  # 11 pairs of 16 s per song; 2 songs for validation
  with writer.song(f'song{index:02d}', f'song{index:02d}.wav') as song:
    song.append((5.7 * rng.standard_normal((13200, 128))).astype(np.float32))
    records.append(dict(song.commit(13200 / 75),
                        split='val' if index < 2 else 'train'))
writer.finish(records, [])
PYTHON
  timeout 200 $PY -m jingle_jax.train "${SEED[@]}" --workdir "$WORK/run" \
    --config.data.dir="$WORK/latents" --config.model.attention_impl=fused \
    --config.num_train_steps=300 --config.log_every_steps=50 \
    --config.eval_every_steps=100000 --config.checkpoint_every_steps=100000 \
    --config.media_pairs=0 --config.early_stopping_patience=0 \
    > "$WORK/train.out" 2> "$WORK/train.err" \
    || log "train ended early: $(grep -v '%|' "$WORK/train.err" | tail -3)"
  grep '"split": "train"' "$WORK/run/metrics.jsonl" > "$OUT/train.jsonl"
fi

# 3. What the kernels replace, recomputation, batch size, the decoder.
bench xla 180 "${SEED[@]}" --config.model.attention_impl=xla
bench remat_none 150 "${SEED[@]}" --config.model.attention_impl=fused \
  --config.model.remat=none
bench batch64 150 "${SEED[@]}" --config.model.attention_impl=fused \
  --config.per_device_batch_size=64 --steps 5
# shellcheck disable=SC2086
bench seed_outlier 180 --config configs/creative.py ${FLAGS:-} \
  --config.model.attention_impl=fused --steps 5

# 4. Precompute's real-time factor with EnCodec on the GPU.
if ! late precompute; then
  log 'precompute: 16 songs of 60 s on cuda'
  $PY -m jingle_jax.synth --out-dir "$WORK/audio" --num-songs 16 \
    --seconds 60 > /dev/null 2>&1
  timeout 150 $PY -m precompute.encode --audio-dir "$WORK/audio" \
    --out-dir "$WORK/encoded" --random-encodec 0 --device cuda \
    > "$OUT/precompute.txt" 2>&1 || log 'precompute failed: see precompute.txt'
fi

# 5. EnCodec's encoder in JAX on the GPU, beside PyTorch's, and in precompute.
if ! late encoder; then
  log 'encoder: JAX against PyTorch, 16 s chunks'
  timeout 120 $PY -m benchmarks.encoder_speed --batch-sizes 1,16,64 \
    > "$OUT/encoder.txt" 2>&1 || log 'encoder_speed failed: see encoder.txt'
  timeout 150 $PY -m precompute.encode --audio-dir "$WORK/audio" \
    --out-dir "$WORK/encoded_jax" --random-encodec 0 --encoder jax \
    > "$OUT/precompute_jax.txt" 2>&1 \
    || log 'precompute --encoder jax failed: see precompute_jax.txt'
fi

$PY - "$OUT" <<'PYTHON'
import json, os, sys
out = sys.argv[1]
def lines(name):
  path = os.path.join(out, name)
  return [json.loads(line) for line in open(path)] if os.path.exists(
      path) else []
rows = ['| run | attention | remat | batch | pairs/s | step ms | compile s '
        '| TFLOP/step | MFU | peak GB | fusions |', '|' + '---|' * 11]
bench = {}
for r in lines('bench.jsonl'):
  bench[r['run']] = r
  peak = r.get('peak_memory_bytes')
  rows.append(f"| {r['run']} | {r['attention']} | {r['remat']} | "
              f"{r['batch_size']} | {r['pairs_per_s']} | "
              f"{r['median_step_ms']} | {r['compile_s']} | "
              f"{r['flops_per_step'] / 1e12:.3f} | {r['mfu']} | "
              f"{peak / 1e9 if peak else None} | {r.get('fusions')} |")
top = os.path.join(out, 'top_ops.txt')
if os.path.exists(top):  # its first line: the kernels and time per step
  rows += ['', 'profile: ' + open(top).readline().strip()]
train = lines('train.jsonl')
rows.append('')
if train:
  later = train[1:] or train  # the first window holds the compilation
  pairs = sum(r['pairs_per_second'] for r in later) / len(later)
  fused = bench.get('fused', {}).get('pairs_per_s')
  rows.append(f"train pairs/s per 50 steps: "
              f"{[round(r['pairs_per_second'], 1) for r in train]}")
  rows.append(f"train after its first window: {pairs:.1f} pairs/s"
              + (f", {pairs / fused:.0%} of the fused bench" if fused
                 else ''))
  rows.append('waiting for data: ' + ', '.join(
      f"{r.get('data_wait_fraction', 0):.1%}" for r in later)
              + '; host ms/step: ' + ', '.join(
      f"{r.get('host_ms_per_step', 0):.1f}" for r in later)
              + '; device ms/step: ' + ', '.join(
      f"{r.get('device_ms_per_step', 0):.1f}" for r in later))
else:
  rows.append('train: no record')
with open(os.path.join(out, 'summary.md'), 'w') as f:
  f.write('\n'.join(rows) + '\n')
print('\n'.join(rows))
PYTHON
grep -o '[0-9.]*x real time[^,]*' "$OUT/precompute.txt" \
  "$OUT/precompute_jax.txt" "$OUT/encoder.txt" 2>/dev/null
log done
rm -rf "$WORK"
