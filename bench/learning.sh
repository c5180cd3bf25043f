#!/usr/bin/env bash
# The learning rules side by side: `lamina compare` of end-to-end backprop, local learning,
# target projection and Forward-Forward on the built-in classification task and on
# modular addition, and the step's arena of each rule at 12 layers.
#
#   bench/learning.sh [STEPS_CLASSIFICATION] [STEPS_MODULAR]
#
# Writes runs/learning/{classification,modular}/ (curves, compare.svg) and prints the
# tables that docs/learning.md records. LAMINA=path/to/lamina to use a built binary.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS_C=${1:-600}
STEPS_M=${2:-3000}
LAMINA=${LAMINA:-target/release/lamina}
[ -x "$LAMINA" ] || cargo build --release --locked
OUT=runs/learning
mkdir -p "$OUT"

echo "== classification, $STEPS_C steps"
"$LAMINA" compare examples/mlp.lam examples/local.lam examples/target_projection.lam \
    examples/forward_forward.lam --task classification --steps "$STEPS_C" \
    --optimizer 'adamw(lr = 1e-3)' --out "$OUT/classification" --force --quiet

# Modular addition: the grokking model with two layers, once per rule.
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
for rule in backprop local target_projection forward_forward; do
    sed "s/^model grokking/model grokking_$rule/" examples/grokking.lam > "$TMP/$rule.lam"
    echo "learning $rule" >> "$TMP/$rule.lam"
done
echo "== modular addition (p = 23, 2 layers), $STEPS_M steps"
"$LAMINA" compare "$TMP"/backprop.lam "$TMP"/local.lam "$TMP"/target_projection.lam \
    "$TMP"/forward_forward.lam --set layers=2 --steps "$STEPS_M" \
    --out "$OUT/modular" --force --quiet

echo "== the step's arena at 12 layers, batch 512 (lamina ir --stage plan)"
for f in examples/mlp.lam examples/local.lam examples/target_projection.lam examples/forward_forward.lam; do
    "$LAMINA" ir "$f" --stage plan --set layers=12 --set batch=512 | head -1
done
