#!/usr/bin/env bash
# The experiments of docs/architectures.md: depth programs and experts on a character-level
# language model of docs/language.md (the char_lm task; its last 10% is held out), every
# model at width D (64 by default) for STEPS steps (300). Prints markdown tables.
#
#   bench/architectures.sh            # all: moe first variant learngene matformer shallow
#   STEPS=600 D=128 bench/architectures.sh moe first
#
# Held-out losses come from the runs' last evaluation (log.jsonl), or, for models cut by
# `lamina extract` and for hard routing, from `lamina run --batch` on one batch of 16
# windows of the held-out text (written by this script).
set -euo pipefail
cd "$(dirname "$0")/.."
steps=${STEPS:-300}
d=${D:-64}
out=${OUT:-target/architectures}
text=docs/language.md
experiments=("$@")
[ ${#experiments[@]} -eq 0 ] && experiments=(moe first variant learngene matformer shallow)
cargo build --release --quiet
bin=./target/release/lamina
mkdir -p "$out"

# One batch (tokens, targets: i32 [16, 64]) of windows from the held-out tail of $text.
python3 - "$text" "$out/heldout.safetensors" <<'EOF'
import json, struct, sys
data = open(sys.argv[1], "rb").read()
tail = data[len(data) - len(data) // 10:]
b, t = 16, 64
step = (len(tail) - t - 1) // b
tok, tgt = [], []
for i in range(b):
    w = tail[i * step : i * step + t + 1]
    tok += list(w[:t]); tgt += list(w[1:])
body = struct.pack(f"<{b*t}i", *tok) + struct.pack(f"<{b*t}i", *tgt)
n = b * t * 4
head = json.dumps({"tokens": {"dtype": "I32", "shape": [b, t], "data_offsets": [0, n]},
                   "targets": {"dtype": "I32", "shape": [b, t], "data_offsets": [n, 2 * n]}}).encode()
head += b" " * (-len(head) % 8)
open(sys.argv[2], "wb").write(struct.pack("<Q", len(head)) + head + body)
EOF

# train NAME FILE [ARGS...]: trains into $out/NAME; prints nothing.
train() {
    local name=$1 file=$2
    shift 2
    "$bin" train "$file" --data "$text" --steps "$steps" --set d="$d" --out "$out/$name" \
        --force --quiet "$@" > /dev/null
}
# Last held-out loss of run NAME.
eval_loss() {
    printf '%.4f' "$(grep eval_loss "$out/$1/log.jsonl" | tail -1 | sed 's/.*"eval_loss":\([0-9.e-]*\).*/\1/')"
}
# Median training step in ms of run NAME.
step_ms() {
    python3 -c "import json,statistics,sys; r=[json.loads(l) for l in open(sys.argv[1])]; \
s=[x for x in r if 'tokens_per_s' in x]; print('%.1f' % (1e3 * statistics.median(16*64/x['tokens_per_s'] for x in s)))" \
        "$out/$1/log.jsonl"
}
# Loss of `lamina run FILE --weights W [ARGS]` on the held-out batch.
run_loss() {
    local file=$1 w=$2
    shift 2
    "$bin" run "$file" --weights "$w" --batch "$out/heldout.safetensors" --set d="$d" "$@" 2> /dev/null
}

for e in "${experiments[@]}"; do
case $e in
moe)
    echo "### Experts against dense at equal active parameters ($steps steps, d = $d)"
    echo
    echo "| model | experts | top | active FFN units | held-out loss | step ms |"
    echo "|---|---|---|---|---|---|"
    for cfg in "1 1" "4 1" "4 2"; do
        set -- $cfg
        train "moe_e$1_k$2" examples/moe.lam --set experts="$1" --set top="$2"
        echo "| moe.lam | $1 | $2 | $((d * $2)) | $(eval_loss "moe_e$1_k$2") | $(step_ms "moe_e$1_k$2") |"
    done
    echo
    ;;
first)
    echo "### FiRST: held-out loss against the fraction of layers skipped ($steps steps, d = $d)"
    echo
    train first examples/first.lam
    echo "| --skip-below | layers skipped | held-out loss |"
    echo "|---|---|---|"
    for tau in 0 0.5 0.8 0.9 0.95 0.97 1; do
        r=$(run_loss examples/first.lam "$out/first/final.safetensors" --skip-below "$tau")
        frac=$(echo "$r" | sed -n 's/layers skipped = \([0-9.]*\).*/\1/p')
        loss=$(echo "$r" | sed -n 's/loss = \([0-9.]*\)/\1/p')
        echo "| $tau | $frac | $loss |"
    done
    echo
    ;;
variant)
    echo "### VARiant: the subnets of one supernet ($steps steps, d = $d)"
    echo
    train variant examples/variant.lam
    echo "| depth | held-out loss (subnet, cut with extract) | held-out loss (trained alone) |"
    echo "|---|---|---|"
    for depth in 8 4 2; do
        "$bin" extract examples/variant.lam --weights "$out/variant/final.safetensors" \
            --depth "$depth" --set d="$d" -o "$out/variant_d$depth" > /dev/null
        r=$(run_loss "$out/variant_d$depth.lam" "$out/variant_d$depth.safetensors")
        train "alone_d$depth" examples/transformer.lam --set layers="$depth"
        "$bin" run examples/transformer.lam --set layers="$depth" --set d="$d" \
            --weights "$out/alone_d$depth/final.safetensors" --batch "$out/heldout.safetensors" \
            > "$out/alone_d$depth.txt" 2> /dev/null
        echo "| $depth | $(echo "$r" | sed -n 's/loss = //p') | $(sed -n 's/loss = //p' "$out/alone_d$depth.txt") |"
    done
    echo
    ;;
learngene)
    short=$((steps / 3))
    echo "### TLEG and SWS: an 8-layer model initialised by expansion against random init"
    echo
    echo "The learngene models (6 layers) train $steps steps; the 8-layer models then train $short steps."
    echo
    echo "| initialisation | held-out loss after $short steps |"
    echo "|---|---|"
    for src in tleg sws; do
        train "$src" "examples/$src.lam"
        "$bin" extract "examples/$src.lam" --weights "$out/$src/final.safetensors" --depth 8 \
            --set d="$d" -o "$out/${src}_8" > /dev/null
        "$bin" train "$out/${src}_8.lam" --init "$out/${src}_8.safetensors" --data "$text" \
            --steps "$short" --set d="$d" --out "$out/${src}_8_run" --force --quiet > /dev/null
        echo "| $src expansion of the trained learngene | $(eval_loss "${src}_8_run") |"
    done
    "$bin" train "$out/tleg_8.lam" --data "$text" --steps "$short" --set d="$d" \
        --out "$out/random_8_run" --force --quiet > /dev/null
    echo "| random (PyTorch defaults) | $(eval_loss random_8_run) |"
    echo
    ;;
matformer)
    echo "### MatFormer: the granularities of one jointly trained model ($steps steps, d = $d)"
    echo
    train matformer examples/matformer.lam
    echo "| granularity | FFN units | held-out loss (cut from the nested model) | held-out loss (trained alone) |"
    echo "|---|---|---|---|"
    for g in 1 1/2 1/4 1/8; do
        tag=${g//\//_}
        "$bin" extract examples/matformer.lam --weights "$out/matformer/final.safetensors" \
            --width "$g" --set d="$d" -o "$out/matformer_$tag" > /dev/null
        r=$(run_loss "$out/matformer_$tag.lam" "$out/matformer_$tag.safetensors")
        train "matformer_alone_$tag" "$out/matformer_$tag.lam"
        units=$(sed -n 's/.*ffn  = ffn(hidden = \([0-9]*\).*/\1/p' "$out/matformer_$tag.lam")
        "$bin" run "$out/matformer_$tag.lam" --set d="$d" \
            --weights "$out/matformer_alone_$tag/final.safetensors" \
            --batch "$out/heldout.safetensors" > "$out/matformer_alone_$tag.txt" 2> /dev/null
        echo "| $g | $units | $(echo "$r" | sed -n 's/loss = //p') | $(sed -n 's/loss = //p' "$out/matformer_alone_$tag.txt") |"
    done
    echo
    ;;
shallow)
    echo "### Parallel against sequential layers ($steps steps, d = $d, 8 layers)"
    echo
    echo "| stack | held-out loss |"
    echo "|---|---|"
    train sequential examples/transformer.lam --set layers=8
    echo "| sequential (transformer.lam) | $(eval_loss sequential) |"
    train shallow examples/shallow.lam
    echo "| parallel, one group (shallow.lam) | $(eval_loss shallow) |"
    echo
    ;;
*)
    echo "unknown experiment $e (moe, first, variant, learngene, matformer, shallow)" >&2
    exit 2
    ;;
esac
done
