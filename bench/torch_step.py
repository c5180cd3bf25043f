"""PyTorch eager reference for `lamina bench`: median training-step time (forward, backward,
SGD) of the brief's byte-level pre-LN causal LM at sizes S, M, L, on 2 threads.

Usage: python3 bench/torch_step.py [S|M|L ...]   (installs torch from PyPI if missing)
Run it in the same session as `lamina bench` and compare ratios: the numbers are noisy.
"""
import subprocess
import sys
import time

try:
    import torch
except ImportError:
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "torch"])
    import torch

import torch.nn as nn
import torch.nn.functional as F

SIZES = {  # T, d, heads, ffn, L, batch
    "S": (64, 128, 4, 512, 4, 16),
    "M": (128, 256, 4, 1024, 4, 8),
    "L": (256, 512, 8, 2048, 6, 4),
}


class Block(nn.Module):
    def __init__(self, d, h, ffn):
        super().__init__()
        self.h = h
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.wq, self.wk, self.wv, self.wo = (nn.Linear(d, d) for _ in range(4))
        self.w1, self.w2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        b, t, d = x.shape
        u = self.ln1(x)
        q, k, v = (w(u).view(b, t, self.h, d // self.h).transpose(1, 2) for w in (self.wq, self.wk, self.wv))
        s = (q @ k.transpose(-1, -2)) / (d // self.h) ** 0.5
        mask = torch.triu(torch.ones(t, t, dtype=torch.bool), 1)
        a = s.masked_fill(mask, float("-inf")).softmax(-1) @ v
        x = x + self.wo(a.transpose(1, 2).reshape(b, t, d))
        return x + self.w2(F.gelu(self.w1(self.ln2(x))))


class LM(nn.Module):
    def __init__(self, t, d, h, ffn, layers):
        super().__init__()
        self.emb, self.pos = nn.Embedding(256, d), nn.Parameter(torch.zeros(t, d))
        self.blocks = nn.ModuleList(Block(d, h, ffn) for _ in range(layers))
        self.ln, self.head = nn.LayerNorm(d), nn.Linear(d, 256)

    def forward(self, tok):
        x = self.emb(tok) + self.pos
        for blk in self.blocks:
            x = blk(x)
        return self.head(self.ln(x))


def bench(size, steps=10):
    t, d, h, ffn, layers, batch = SIZES[size]
    torch.manual_seed(0)
    model = LM(t, d, h, ffn, layers)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
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


if __name__ == "__main__":
    torch.set_num_threads(2)
    for size in sys.argv[1:] or ["S", "M"]:
        print(f"torch {torch.__version__} {size} pre-LN: median step {bench(size) * 1e3:.1f} ms")
