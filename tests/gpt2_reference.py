"""An independent GPT-2 forward in PyTorch (float64), read straight from a Hugging Face
checkpoint (Conv1D weights [in, out], fused c_attn), without the `transformers` package.

usage: gpt2_reference.py MODEL.safetensors CONFIG.json BATCH.safetensors OUT.safetensors

BATCH holds `tokens` and `targets` [B, T]; OUT receives `logits` [B, T, vocab] and the mean
cross-entropy `loss`. tests/import.rs runs it when LAMINA_TORCH_PYTHON is set.
"""

import json
import math
import sys

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file


def main():
    ckpt, config, batch, out = sys.argv[1:5]
    w = {k.removeprefix("transformer."): v.double() for k, v in load_file(ckpt).items()}
    with open(config) as f:
        cfg = json.load(f)
    heads, layers = cfg["n_head"], cfg["n_layer"]
    eps = cfg.get("layer_norm_epsilon", 1e-5)
    b = load_file(batch)
    tokens, targets = b["tokens"].long(), b["targets"].long()
    B, T = tokens.shape
    x = w["wte.weight"][tokens] + w["wpe.weight"][:T]
    d = x.shape[-1]
    dh = d // heads
    causal = torch.ones(T, T, dtype=torch.bool).tril()

    def ln(x, p):
        return F.layer_norm(x, (d,), w[p + ".weight"], w[p + ".bias"], eps)

    def conv1d(x, p):
        return x @ w[p + ".weight"] + w[p + ".bias"]

    for i in range(layers):
        h = ln(x, f"h.{i}.ln_1")
        q, k, v = conv1d(h, f"h.{i}.attn.c_attn").split(d, dim=-1)
        q, k, v = (t.view(B, T, heads, dh).transpose(1, 2) for t in (q, k, v))
        s = (q @ k.transpose(-1, -2)) / math.sqrt(dh)
        s = s.masked_fill(~causal, float("-inf"))
        a = (s.softmax(-1) @ v).transpose(1, 2).reshape(B, T, d)
        x = x + conv1d(a, f"h.{i}.attn.c_proj")
        h = F.gelu(conv1d(ln(x, f"h.{i}.ln_2"), f"h.{i}.mlp.c_fc"), approximate="tanh")
        x = x + conv1d(h, f"h.{i}.mlp.c_proj")
    logits = ln(x, "ln_f") @ w["wte.weight"].T
    loss = F.cross_entropy(logits.reshape(B * T, -1), targets.reshape(-1))
    save_file({"logits": logits.contiguous(), "loss": loss.reshape(())}, out)


if __name__ == "__main__":
    main()
