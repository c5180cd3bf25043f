"""PyTorch eager reference for `lamina bench`: median training-step time (forward, backward,
optimizer update) of the byte-level causal LM at sizes S, M, L in three block layouts. The
optimizer is AdamW (lr 1e-3, weight decay 0.01: lamina's default recipe) in PyTorch's fastest
CPU mode, fused, or SGD (lr 1e-3) with `--optimizer sgd`.

The models match examples/bench/*.lam: embedding + learned positions, L blocks, final
LayerNorm, untied head, vocab 256, Linear layers with biases, exact GELU, causal attention.
- pre:     x = x + attn(LN(x)); x = x + ffn(LN(x))
- macaron: x = x + 0.5 ffn0(LN(x)); x = x + attn(LN(x)); x = x + 0.5 ffn1(LN(x))
- peri:    x = x + LN_out(attn(LN_in(x))); x = x + LN_out(ffn(LN_in(x)))

Usage: python3 bench/torch_step.py [--threads N] [--optimizer adamw|sgd] [SIZE VARIANT ...]
  e.g. `S pre M macaron` (2 threads unless --threads)
Prints one line per model: `torch <version> <size> <variant> median_ms <ms> peak_rss_kb <kb>`.
Run it in the same session as `lamina bench` and compare ratios: the numbers are noisy.
"""
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

SIZES = {  # T, d, heads, ffn, L, batch
    "S": (64, 128, 4, 512, 4, 16),
    "M": (128, 256, 4, 1024, 4, 8),
    "L": (256, 512, 8, 2048, 6, 4),
}


class Attn(nn.Module):
    def __init__(self, d, h):
        super().__init__()
        self.h = h
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))

    def forward(self, u):
        b, t, d = u.shape
        q, k, v = (w(u).view(b, t, self.h, d // self.h).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        s = (q @ k.transpose(-1, -2)) / (d // self.h) ** 0.5
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        a = s.masked_fill(mask, float("-inf")).softmax(-1) @ v
        return self.wo(a.transpose(1, 2).reshape(b, t, d))


class FFN(nn.Module):
    def __init__(self, d, ffn):
        super().__init__()
        self.w1, self.w2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, u):
        return self.w2(F.gelu(self.w1(u)))


class Sub(nn.Module):
    """A sublayer with its norms: pre (one norm in) or peri (norms in and out)."""

    def __init__(self, f, d, peri):
        super().__init__()
        self.f, self.n_in = f, nn.LayerNorm(d)
        self.n_out = nn.LayerNorm(d) if peri else None

    def forward(self, x):
        y = self.f(self.n_in(x))
        return self.n_out(y) if self.n_out is not None else y


class Block(nn.Module):
    def __init__(self, d, h, ffn, variant):
        super().__init__()
        peri = variant == "peri"
        if variant == "macaron":
            self.steps = nn.ModuleList([Sub(FFN(d, ffn), d, False), Sub(Attn(d, h), d, False), Sub(FFN(d, ffn), d, False)])
            self.coef = [0.5, 1.0, 0.5]
        else:
            self.steps = nn.ModuleList([Sub(Attn(d, h), d, peri), Sub(FFN(d, ffn), d, peri)])
            self.coef = [1.0, 1.0]

    def forward(self, x):
        for c, s in zip(self.coef, self.steps):
            x = x + s(x) if c == 1.0 else x + c * s(x)
        return x


class LM(nn.Module):
    def __init__(self, t, d, h, ffn, layers, variant):
        super().__init__()
        self.emb, self.pos = nn.Embedding(256, d), nn.Parameter(torch.zeros(t, d))
        self.blocks = nn.ModuleList(Block(d, h, ffn, variant) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, 256)

    def forward(self, tok):
        x = self.emb(tok) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def make_optimizer(name, params):
    if name == "sgd":
        return torch.optim.SGD(params, lr=1e-3)
    try:
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, fused=True)
    except (RuntimeError, TypeError):  # a build without the fused CPU kernel
        return torch.optim.AdamW(params, lr=1e-3, weight_decay=0.01, foreach=True)


def bench(size, variant, optimizer="adamw", steps=10):
    t, d, h, ffn, layers, batch = SIZES[size]
    torch.manual_seed(0)
    model = LM(t, d, h, ffn, layers, variant)
    opt = make_optimizer(optimizer, list(model.parameters()))
    tok = torch.randint(0, 256, (batch, t))
    tgt = torch.randint(0, 256, (batch, t))

    def step():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(tok).view(-1, 256), tgt.view(-1))
        loss.backward()
        opt.step()

    for _ in range(2):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    times.sort()
    return times[len(times) // 2]


USAGE = "usage: torch_step.py [--threads N] [--optimizer adamw|sgd] [S|M|L pre|macaron|peri ...]"


if __name__ == "__main__":
    args = sys.argv[1:]
    optimizer, threads = "adamw", 2
    while args[:1] in (["--optimizer"], ["--threads"]) and len(args) >= 2:
        if args[0] == "--optimizer" and args[1] in ("adamw", "sgd"):
            optimizer = args[1]
        elif args[0] == "--threads" and args[1].isdigit() and int(args[1]) > 0:
            threads = int(args[1])
        else:
            sys.exit(USAGE)
        args = args[2:]
    torch.set_num_threads(threads)
    args = args or ["S", "pre", "M", "pre"]
    if len(args) % 2 or any(s not in SIZES for s in args[::2]) or any(
        v not in ("pre", "macaron", "peri") for v in args[1::2]
    ):
        sys.exit(USAGE)
    for size, variant in zip(args[::2], args[1::2]):
        ms = bench(size, variant, optimizer) * 1e3
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        print(f"torch {torch.__version__} {size} {variant} median_ms {ms:.1f} peak_rss_kb {rss}", flush=True)
