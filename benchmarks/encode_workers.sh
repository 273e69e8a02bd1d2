#!/usr/bin/env bash
# precompute.encode on 1 worker against K side by side, on this machine.
#
#   [PY=.venv/bin/python] [K=2] [SONGS=8] [SONG_SECONDS=48] [THREADS=]
#       bash benchmarks/encode_workers.sh WORK_DIR
#
# Writes SONGS demo songs of SONG_SECONDS seconds (jingle_jax.synth),
# encodes them with seeded random EnCodec weights by one process, then by K
# processes side by side (each with THREADS torch threads when set), prints
# the wall time of each and checks that the two datasets hold the same
# files, byte for byte (the workers' worker-I-of-K.json aside).
set -euo pipefail

WORK=${1:?usage: bash benchmarks/encode_workers.sh WORK_DIR}
PY=${PY:-.venv/bin/python}
K=${K:-2}
cd "$(dirname "$0")/.."
ENCODE=(-m precompute.encode --audio-dir "$WORK/audio" --random-encodec 0
        --device cpu)

[[ -d $WORK/audio ]] || "$PY" -m jingle_jax.synth --out-dir "$WORK/audio" \
    --num-songs "${SONGS:-8}" --seconds "${SONG_SECONDS:-48}" 2>/dev/null
rm -rf "$WORK/one" "$WORK/many"

start=$(date +%s.%N)
"$PY" "${ENCODE[@]}" --out-dir "$WORK/one" 2>"$WORK/one.log"
echo "1 worker: $(echo "$(date +%s.%N) - $start" | bc) s"

start=$(date +%s.%N)
for ((i = 0; i < K; i++)); do
  ${THREADS:+env OMP_NUM_THREADS=$THREADS} "$PY" "${ENCODE[@]}" \
      --out-dir "$WORK/many" --num-workers "$K" --worker-index "$i" \
      2>"$WORK/many.$i.log" &
done
wait
echo "$K workers${THREADS:+ of $THREADS thread(s)}:" \
     "$(echo "$(date +%s.%N) - $start" | bc) s"

diff -r -x 'worker-*.json' "$WORK/one" "$WORK/many" \
    && echo "same files, byte for byte"
