#!/usr/bin/env bash
# The learning rules and optimizers side by side, as recorded in docs/learning.md.
#
#   bench/learning.sh [SECTION...]      sections: rules, modular, memory, optimizers (default: all)
#
# rules:      `lamina compare` of end-to-end backprop, local learning, target projection and
#             Forward-Forward on the built-in classification task (STEPS_C, 600);
# modular:    the same rules on modular addition, the grokking model with two layers
#             (STEPS_M, 3000);
# memory:     the step's arena of each rule at 12 layers, batch 512;
# optimizers: AdamW, Muon and Drop-Muon on char_lm (examples/muon.lam, its own recipe per
#             optimizer; the corpus is this repository's documentation), STEPS_O (600).
# Runs go to runs/learning/<section>/ (curves, compare.svg, compare_time.svg). LAMINA=path
# to use a built binary.
set -euo pipefail
cd "$(dirname "$0")/.."
STEPS_C=${STEPS_C:-600}
STEPS_M=${STEPS_M:-3000}
STEPS_O=${STEPS_O:-600}
LAMINA=${LAMINA:-target/release/lamina}
[ -x "$LAMINA" ] || cargo build --release --locked
OUT=runs/learning
mkdir -p "$OUT"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

rules() {
    echo "== classification, $STEPS_C steps"
    "$LAMINA" compare examples/mlp.lam examples/local.lam examples/target_projection.lam \
        examples/forward_forward.lam --task classification --steps "$STEPS_C" \
        --optimizer 'adamw(lr = 1e-3)' --out "$OUT/classification" --force --quiet
}

modular() {
    for rule in backprop local target_projection forward_forward; do
        sed "s/^model grokking/model grokking_$rule/" examples/grokking.lam > "$TMP/$rule.lam"
        echo "learning $rule" >> "$TMP/$rule.lam"
    done
    echo "== modular addition (p = 23, 2 layers), $STEPS_M steps"
    "$LAMINA" compare "$TMP"/backprop.lam "$TMP"/local.lam "$TMP"/target_projection.lam \
        "$TMP"/forward_forward.lam --set layers=2 --steps "$STEPS_M" \
        --out "$OUT/modular" --force --quiet
}

memory() {
    echo "== the step's arena at 12 layers, batch 512 (lamina ir --stage plan)"
    for f in examples/mlp.lam examples/local.lam examples/target_projection.lam \
        examples/forward_forward.lam; do
        "$LAMINA" ir "$f" --stage plan --set layers=12 --set batch=512 | head -1
    done
}

optimizers() {
    cat README.md ARCHITECTURE.md docs/*.md > "$TMP/corpus.txt"
    sed 's/^model muon/model adamw/; s/^\( *optimizer *=\).*/\1 adamw(lr = 3e-3, betas = [0.9, 0.95])/' \
        examples/muon.lam > "$TMP/adamw.lam"
    cp examples/muon.lam "$TMP/muon.lam"
    sed 's/^model muon/model drop_muon/; s/optimizer = muon(/optimizer = drop_muon(/' \
        examples/muon.lam > "$TMP/drop_muon.lam"
    echo "== char_lm on the documentation ($(wc -c < "$TMP/corpus.txt") bytes), $STEPS_O steps"
    "$LAMINA" compare "$TMP/adamw.lam" "$TMP/muon.lam" "$TMP/drop_muon.lam" --each-recipe \
        --task char_lm --data "$TMP/corpus.txt" --steps "$STEPS_O" \
        --out "$OUT/optimizers" --force --quiet
}

for section in "${@:-rules modular memory optimizers}"; do
    for s in $section; do "$s"; done
done
