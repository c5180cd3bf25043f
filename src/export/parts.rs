//! The fixed Python parts of model.py: one class per sublayer and norm kind, written once
//! and included when the model uses them.

pub(crate) const HEADER: &str = r#"import math
import sys

import torch
import torch.nn as nn
import torch.nn.functional as F
"#;

pub(crate) const LAYER_NORM: &str = r#"

class LayerNorm(nn.Module):
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * weight + bias, the
    variance biased; weight starts at ones, bias at zeros."""

    def __init__(self, width, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))
        self.bias = nn.Parameter(torch.zeros(width))

    def forward(self, x):
        return F.layer_norm(x, (x.shape[-1],), self.weight, self.bias, self.eps)
"#;

pub(crate) const RMS_NORM: &str = r#"

class RMSNorm(nn.Module):
    """RMSNorm over the last axis: x / sqrt(mean(x^2) + eps) * weight; no bias."""

    def __init__(self, width, eps):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(width))

    def forward(self, x):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps) * self.weight
"#;

pub(crate) const ATTENTION: &str = r#"

def rotate(x, base, pairs):
    """RoPE on x [b, h, t, dh]: pair i of a head at position m turns by m * base^(-2i / dh).
    Pairs are (i, i + dh/2) with "half" (GPT-NeoX, Llama), (2i, 2i + 1) with "interleaved"
    (RoFormer, GPT-J)."""
    t, dh = x.shape[-2], x.shape[-1]
    inv = base ** (-torch.arange(0, dh, 2, dtype=torch.float64) / dh)
    angle = torch.arange(t, dtype=torch.float64)[:, None] * inv[None, :]
    cos, sin = angle.cos().to(x.dtype), angle.sin().to(x.dtype)
    if pairs == "half":
        x1, x2 = x[..., : dh // 2], x[..., dh // 2 :]
        return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    x1, x2 = x[..., 0::2], x[..., 1::2]
    return torch.stack([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).flatten(-2)


class Attention(nn.Module):
    """Multi-head self-attention: softmax(q k^T / sqrt(width / heads)) v, causally masked
    when `causal`, then the output projection `wo`. Keys and values have `kv_heads` heads,
    each serving heads / kv_heads query heads; `qk_norm_eps` puts an RMSNorm on each head's
    queries and keys; `rope` = (base, pairs) rotates queries and keys by position;
    `dropout` drops attention probabilities while training."""

    def __init__(self, width, heads, causal, bias, kv_heads=None, qk_norm_eps=None, rope=None, dropout=0.0):
        super().__init__()
        self.heads, self.causal, self.rope = heads, causal, rope
        self.kv_heads, self.dropout = kv_heads or heads, dropout
        dh = width // heads
        self.wq = nn.Linear(width, width, bias=bias)
        self.wk = nn.Linear(width, self.kv_heads * dh, bias=bias)
        self.wv = nn.Linear(width, self.kv_heads * dh, bias=bias)
        self.wo = nn.Linear(width, width, bias=bias)
        self.q_norm = RMSNorm(dh, qk_norm_eps) if qk_norm_eps is not None else None
        self.k_norm = RMSNorm(dh, qk_norm_eps) if qk_norm_eps is not None else None

    def forward(self, x):
        b, t, w = x.shape
        dh = w // self.heads
        q = self.wq(x).view(b, t, self.heads, dh)
        k = self.wk(x).view(b, t, self.kv_heads, dh)
        v = self.wv(x).view(b, t, self.kv_heads, dh)
        if self.q_norm is not None:
            q, k = self.q_norm(q), self.k_norm(k)
        q, k, v = (y.transpose(1, 2) for y in (q, k, v))
        if self.rope is not None:
            q, k = rotate(q, *self.rope), rotate(k, *self.rope)
        group = self.heads // self.kv_heads
        k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        scores = (q @ k.transpose(-1, -2)) * (1.0 / math.sqrt(dh))
        if self.causal:
            mask = torch.ones(t, t, dtype=torch.bool, device=x.device).triu(1)
            scores = scores.masked_fill(mask, float("-inf"))
        o = F.dropout(scores.softmax(-1), self.dropout, self.training) @ v
        return self.wo(o.transpose(1, 2).reshape(b, t, w))
"#;

pub(crate) const FFN: &str = r#"

ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact, with erf
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "silu": F.silu,
}


class FFN(nn.Module):
    """w2(act(w1 x)), or w2(act(w1 x) * w3 x) with `glu`."""

    def __init__(self, width, hidden, act, glu, bias):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.w1 = nn.Linear(width, hidden, bias=bias)
        if glu:
            self.w3 = nn.Linear(width, hidden, bias=bias)
        self.w2 = nn.Linear(hidden, width, bias=bias)
        self.glu = glu

    def forward(self, x):
        a = self.act(self.w1(x))
        if self.glu:
            a = a * self.w3(x)
        return self.w2(a)


def moe_start(model):
    """Forget the balance losses of the previous forward."""
    for m in model.modules():
        if isinstance(m, MoE):
            m.losses = []


def moe_balance(model):
    """The sum of the balance losses of every expert layer run, or None."""
    losses = [l for m in model.modules() if isinstance(m, MoE) for l in m.losses]
    return sum(losses) if losses else None
"#;

pub(crate) const MOE: &str = r#"

class MoE(nn.Module):
    """Dense-masked mixture of experts: y = w2(act(w1 x) * (k g)), where expert e owns
    hidden units e*hidden .. (e+1)*hidden, g = p m / sum(p m) with p = softmax(router x)
    and m the mask of the k = top largest p (ties to the lower index). With equal gates
    and every expert active this is the dense FFN. Each forward appends the Switch
    load-balancing loss balance * E * sum_e f_e P_e to self.losses."""

    def __init__(self, width, experts, top, hidden, act, glu, bias, balance):
        super().__init__()
        self.act = ACTIVATIONS[act]
        self.experts, self.top, self.hidden = experts, top, hidden
        self.router = nn.Linear(width, experts, bias=False)
        self.w1 = nn.Linear(width, experts * hidden, bias=bias)
        if glu:
            self.w3 = nn.Linear(width, experts * hidden, bias=bias)
        self.w2 = nn.Linear(experts * hidden, width, bias=bias)
        self.glu, self.balance = glu, balance
        self.losses = []

    def forward(self, x):
        p = torch.softmax(self.router(x), -1)
        # stable sort: equal probabilities go to the lower index, as in lamina
        order = torch.sort(p, dim=-1, descending=True, stable=True).indices
        m = torch.zeros_like(p).scatter(-1, order[..., : self.top], 1.0)
        pm = p * m
        g = self.top * pm / pm.sum(-1, keepdim=True)
        a = self.act(self.w1(x))
        if self.glu:
            a = a * self.w3(x)
        a = a * g.repeat_interleave(self.hidden, -1)
        if self.balance > 0:
            f = m.reshape(-1, self.experts).mean(0) / self.top
            big_p = p.reshape(-1, self.experts).mean(0)
            self.losses.append(self.balance * self.experts * (f * big_p).sum())
        return self.w2(a)
"#;

pub(crate) const SINUSOIDAL: &str = r#"

def sinusoidal(length, dim):
    """The fixed position table of Vaswani et al.: columns 2i and 2i+1 are the sine and
    cosine of pos / 10000^(2i / dim)."""
    pos = torch.arange(length, dtype=torch.float64)[:, None]
    two_i = (torch.arange(dim) // 2 * 2).to(torch.float64)
    angle = pos / torch.pow(torch.tensor(10000.0, dtype=torch.float64), two_i / dim)
    table = torch.where(torch.arange(dim) % 2 == 0, torch.sin(angle), torch.cos(angle))
    return table.to(torch.float32)
"#;

pub(crate) const SINCOS_2D: &str = r#"

def sincos_2d(rows, cols, dim):
    """The fixed 2-D table of an image model: the patch at row r, column c gets
    [sinusoidal(r), sinusoidal(c)], each of width dim / 2; rows of the table in row-major
    patch order."""
    half = dim // 2
    pe = sinusoidal(max(rows, cols), half)
    r = pe[:rows, None, :].expand(rows, cols, half)
    c = pe[None, :cols, :].expand(rows, cols, half)
    return torch.cat([r, c], 2).reshape(rows * cols, dim)
"#;

pub(crate) const AUX_FFN: &str = r#"

class AuxFFN(nn.Module):
    """An auxiliary head: Linear, GELU, Linear."""

    def __init__(self, width, hidden, out, bias):
        super().__init__()
        self.up = nn.Linear(width, hidden)
        self.down = nn.Linear(hidden, out, bias=bias)

    def forward(self, x):
        return self.down(F.gelu(self.up(x)))
"#;

/// Loading lamina's files and the command line that mirrors `lamina run`.
pub(crate) const FOOTER: &str = r#"

def frozen(module):
    """Keep a module's parameters at their initial values (lamina's frozen parameters)."""
    for p in module.parameters():
        p.requires_grad_(False)
    return module


def load_lamina(model, path):
    """Load lamina weights (`lamina init`, a run's final.safetensors or checkpoint): every
    tensor whose name is in the model's state dict; a checkpoint's optimizer state
    (`optim.*`) is left out. Missing or misshapen tensors are an error."""
    from safetensors.torch import load_file

    state = model.state_dict()
    tensors = {k: v for k, v in load_file(path).items() if k in state}
    model.load_state_dict(tensors, strict=True)
    return model


def save_lamina(model, path):
    """Write the model's weights as safetensors with lamina's names (`lamina run --weights`)."""
    from safetensors.torch import save_file

    save_file({k: v.detach().contiguous() for k, v in model.state_dict().items()}, path)


def main(argv):
    """python model.py --weights W --batch B --out O: loss, logits and the gradient of every
    trainable parameter (`grad.<name>`) of one batch, as `lamina run` writes them."""
    import argparse

    from safetensors.torch import load_file, save_file

    ap = argparse.ArgumentParser(description=main.__doc__)
    ap.add_argument("--weights", required=True)
    ap.add_argument("--batch", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--double", action="store_true", help="compute in float64")
    args = ap.parse_args(argv)
    model = load_lamina(Model(), args.weights).eval()  # as `lamina run`: no dropout
    batch = load_file(args.batch)
    if args.double:
        model = model.double()
        batch = {k: v.double() if v.is_floating_point() else v for k, v in batch.items()}
    loss, logits = model(*(batch[name] for name in INPUTS))
    loss.backward()
    out = {"loss": loss.detach().float(), "logits": logits.detach().float().contiguous()}
    for name, part in model.parts.items():
        out[name] = part.detach().float()
    for name, p in model.named_parameters():
        if p.requires_grad and p.grad is not None:
            out["grad." + name] = p.grad.float().contiguous()
    save_file(out, args.out)
    print(f"loss {loss.item():.6f}")


if __name__ == "__main__":
    main(sys.argv[1:])
"#;
