#!/usr/bin/env bash
# Side-by-side tables of lamina and PyTorch eager training steps on the benchmark models
# (examples/bench), both on the same number of threads: parameters, compile ms, median step
# ms, the ratio torch / lamina (above 1: lamina is faster), matmul GFLOP/s and their share of
# the machine's 256-bit FMA peak on those threads, tokens/s, peak arena bytes and whole-process
# peak RSS. Each model runs REPS times alternating lamina and torch; a table shows the median
# over repetitions of each one's median step.
#
# One table per optimizer: AdamW (lamina's default recipe; PyTorch's fused AdamW) first, then
# SGD. OPTIMIZERS="adamw" (or "sgd") runs one. Each table is also written as CSV to
# $OUT/compare_<optimizer>.csv (OUT defaults to target/bench), which bench/plot.py draws.
#
# Usage: [OPTIMIZERS="adamw sgd"] [THREADS=2] bench/compare.sh [REPS] [MODEL ...]
#   e.g. bench/compare.sh 3 s_pre_ln m_pre_ln
# Needs python3 with torch importable (pip install torch, or PYTHON=path/to/python); builds
# lamina in release mode.
set -euo pipefail
cd "$(dirname "$0")/.."
reps=${1:-3}
optimizers=${OPTIMIZERS:-${OPTIMIZER:-adamw sgd}}
threads=${THREADS:-2}
python=${PYTHON:-python3}
out=${OUT:-target/bench}
shift || true
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
    models=(s_pre_ln s_macaron s_peri_ln m_pre_ln m_macaron m_peri_ln l_pre_ln l_macaron l_peri_ln)
fi
cargo build --release --quiet
bin=./target/release/lamina
mkdir -p "$out"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

median() { sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
maximum() { sort -g | tail -1; }

# One model under one optimizer: REPS alternating runs; prints a table row and a CSV row.
compare_model() {
    local m=$1 optimizer=$2 size variant
    size=$(echo "${m%%_*}" | tr a-z A-Z)
    case "$m" in
        *_pre_ln) variant=pre ;;
        *_macaron) variant=macaron ;;
        *_peri_ln) variant=peri ;;
        *) echo "unknown model $m" >&2; exit 2 ;;
    esac
    local lamina_opt
    case "$optimizer" in
        adamw) lamina_opt='adamw(lr = 0.001, weight_decay = 0.01)' ;;
        sgd) lamina_opt='sgd(lr = 0.001)' ;;
        *) echo "optimizers are adamw and sgd, not $optimizer" >&2; exit 2 ;;
    esac
    for f in l_step l_comp l_rss l_peak t_step t_rss; do : > "$tmp/$f"; done
    local step tokens gflop arena params
    for _ in $(seq "$reps"); do
        /usr/bin/time -v "$bin" --threads "$threads" bench "examples/bench/$m.lam" --steps 10 \
            --optimizer "$lamina_opt" > "$tmp/l_out" 2> "$tmp/l_time"
        awk '/^step/ {print $2}' "$tmp/l_out" >> "$tmp/l_step"
        awk '/^compile/ {print $2}' "$tmp/l_out" >> "$tmp/l_comp"
        awk '/Maximum resident/ {print $6}' "$tmp/l_time" >> "$tmp/l_rss"
        # The FMA peak is measured by each run; load only lowers it, so keep the highest.
        sed -n 's/^matmul.*peak (\([0-9.]*\) GFLOP.*/\1/p' "$tmp/l_out" >> "$tmp/l_peak"
        # Per-step work (tokens, GFLOP) from this run's rates, to rate the median step.
        step=$(awk '/^step/ {print $2}' "$tmp/l_out")
        tokens=$(awk -v s="$step" '/^tokens/ {print $2 * s / 1000}' "$tmp/l_out")
        gflop=$(awk -v s="$step" '/^matmul/ {print $2 * s / 1000}' "$tmp/l_out")
        arena=$(awk '/^peak arena/ {print $3}' "$tmp/l_out")
        params=$(awk '/^model/ {gsub(/[(,]/, "", $3); print $3}' "$tmp/l_out")
        "$python" bench/torch_step.py --threads "$threads" --optimizer "$optimizer" "$size" "$variant" \
            2> /dev/null > "$tmp/t_out"
        awk '{print $6}' "$tmp/t_out" >> "$tmp/t_step"
        awk '{print $8}' "$tmp/t_out" >> "$tmp/t_rss"
    done
    local ls lc lr ts tr peak tok gfs ratio pct lmb tmb
    ls=$(median < "$tmp/l_step"); lc=$(median < "$tmp/l_comp"); lr=$(median < "$tmp/l_rss")
    ts=$(median < "$tmp/t_step"); tr=$(median < "$tmp/t_rss")
    peak=$(maximum < "$tmp/l_peak")
    tok=$(awk -v s="$ls" -v t="$tokens" 'BEGIN {printf "%.0f", t / s * 1000}')
    gfs=$(awk -v s="$ls" -v g="$gflop" 'BEGIN {printf "%.1f", g / s * 1000}')
    ratio=$(awk -v a="$ts" -v b="$ls" 'BEGIN {printf "%.2f", a / b}')
    pct=$(awk -v g="$gfs" -v p="${peak:-0}" 'BEGIN {if (p > 0) printf "%.0f", 100 * g / p; else print "-"}')
    lmb=$(awk -v r="$lr" 'BEGIN {printf "%.0f", r / 1024}')
    tmb=$(awk -v r="$tr" 'BEGIN {printf "%.0f", r / 1024}')
    printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' "$m" "$params" "$lc" \
        "$ls" "$ts" "$ratio" "$gfs" "$pct" "$tok" "$arena" "$lmb" "$tmb"
    echo "$m,$params,$lc,$ls,$ts,$ratio,$gfs,$pct,$tok,$lmb,$tmb" >> "$out/compare_$optimizer.csv"
}

for optimizer in $optimizers; do
    echo "model,params,lamina_compile_ms,lamina_step_ms,torch_step_ms,torch_over_lamina,lamina_gflops,percent_of_peak,lamina_tokens_per_s,lamina_rss_mb,torch_rss_mb" \
        > "$out/compare_$optimizer.csv"
    printf '\n%s step on %s threads (lamina: `lamina bench --optimizer`; PyTorch eager: bench/torch_step.py)\n\n' \
        "$optimizer" "$threads"
    printf '| model | params | lamina compile ms | lamina step ms | torch step ms | torch/lamina | lamina GFLOP/s | %% of FMA peak | lamina tokens/s | lamina arena bytes | lamina peak RSS MB | torch peak RSS MB |\n'
    printf '|---|---|---|---|---|---|---|---|---|---|---|---|\n'
    for m in "${models[@]}"; do
        compare_model "$m" "$optimizer"
    done
done
echo
echo "CSV in $out/compare_*.csv; draw them with: python3 bench/plot.py $out/compare_adamw.csv FILE.svg"
