#!/usr/bin/env bash
# Side-by-side table of lamina and PyTorch eager (2 threads) training steps on the benchmark
# models (examples/bench): compile ms, median step ms, tokens/s, GFLOP/s, peak arena bytes and
# whole-process peak RSS. Each model runs REPS times alternating lamina and torch; the table
# shows the median over repetitions of each one's median step, and the ratio torch / lamina
# (above 1: lamina is faster).
#
# Both run the same optimizer: AdamW by default (lamina's default recipe; PyTorch's fused
# AdamW), or SGD with OPTIMIZER=sgd.
#
# Usage: [OPTIMIZER=adamw|sgd] bench/compare.sh [REPS] [MODEL ...]   e.g. bench/compare.sh 3 s_pre_ln
# Needs python3 with torch importable (pip install torch, or PYTHON=path/to/python); builds
# lamina in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
optimizer=${OPTIMIZER:-adamw}
python=${PYTHON:-python3}
case "$optimizer" in
    adamw) lamina_opt=(--optimizer 'adamw(lr = 0.001, weight_decay = 0.01)') ;;
    sgd) lamina_opt=(--optimizer 'sgd(lr = 0.001)') ;;
    *) echo "OPTIMIZER must be adamw or sgd" >&2; exit 2 ;;
esac
shift || true
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
    models=(s_pre_ln s_macaron s_peri_ln m_pre_ln m_macaron m_peri_ln l_pre_ln l_macaron l_peri_ln)
fi
cargo build --release --quiet
bin=./target/release/lamina
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

printf '| model | lamina compile ms | lamina step ms | torch step ms | torch/lamina | lamina tokens/s | lamina GFLOP/s | lamina arena bytes | lamina peak RSS MB | torch peak RSS MB |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for m in "${models[@]}"; do
    size=$(echo "${m%%_*}" | tr a-z A-Z)
    case "$m" in
        *_pre_ln) variant=pre ;;
        *_macaron) variant=macaron ;;
        *_peri_ln) variant=peri ;;
        *) echo "unknown model $m" >&2; exit 2 ;;
    esac
    : > "$tmp/l_step"; : > "$tmp/l_comp"; : > "$tmp/l_rss"; : > "$tmp/t_step"; : > "$tmp/t_rss"
    for _ in $(seq "$reps"); do
        /usr/bin/time -v "$bin" bench "examples/bench/$m.lam" --steps 10 "${lamina_opt[@]}" > "$tmp/l_out" 2> "$tmp/l_time"
        awk '/^step/ {print $2}' "$tmp/l_out" >> "$tmp/l_step"
        awk '/^compile/ {print $2}' "$tmp/l_out" >> "$tmp/l_comp"
        awk '/Maximum resident/ {print $6}' "$tmp/l_time" >> "$tmp/l_rss"
        # Per-step work (tokens, GFLOP) from this run's rates, to rate the median step.
        step=$(awk '/^step/ {print $2}' "$tmp/l_out")
        tokens=$(awk -v s="$step" '/^tokens/ {print $2 * s / 1000}' "$tmp/l_out")
        gflop=$(awk -v s="$step" '/^matmul/ {print $2 * s / 1000}' "$tmp/l_out")
        arena=$(awk '/^peak arena/ {print $3}' "$tmp/l_out")
        "$python" bench/torch_step.py --optimizer "$optimizer" "$size" "$variant" 2> /dev/null > "$tmp/t_out"
        awk '{print $6}' "$tmp/t_out" >> "$tmp/t_step"
        awk '{print $8}' "$tmp/t_out" >> "$tmp/t_rss"
    done
    ls=$(median < "$tmp/l_step"); lc=$(median < "$tmp/l_comp"); lr=$(median < "$tmp/l_rss")
    ts=$(median < "$tmp/t_step"); tr=$(median < "$tmp/t_rss")
    tok=$(awk -v s="$ls" -v t="$tokens" 'BEGIN {printf "%.0f", t / s * 1000}')
    gfs=$(awk -v s="$ls" -v g="$gflop" 'BEGIN {printf "%.1f", g / s * 1000}')
    printf '| %s | %s | %s | %s | %.2f | %s | %s | %s | %.0f | %.0f |\n' "$m" "$lc" "$ls" "$ts" \
        "$(awk -v a="$ts" -v b="$ls" 'BEGIN {print a / b}')" "$tok" "$gfs" "$arena" \
        "$(awk -v r="$lr" 'BEGIN {print r / 1024}')" "$(awk -v r="$tr" 'BEGIN {print r / 1024}')"
done
