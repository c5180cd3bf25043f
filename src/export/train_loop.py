
import argparse
import json
import math
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as generated  # noqa: E402
from model import BATCH, INPUTS, Model, load_lamina  # noqa: E402

LENGTH = getattr(generated, "LENGTH", 0)

HERE = os.path.dirname(os.path.abspath(__file__))


# ---------------------------------------------------------------- schedule


def schedule(t):
    """The learning-rate factor of step t (0-based): linear warmup, then constant or a
    cosine down to `final` of the peak (lamina's Schedule::lr with a peak of 1)."""
    warmup = SCHEDULE["warmup"]
    if t < warmup:
        return (t + 1) / warmup
    if SCHEDULE["kind"] == "constant":
        return 1.0
    span = max(STEPS - warmup, 1)
    progress = min((t - warmup) / span, 1.0)
    c = 0.5 * (1.0 + math.cos(math.pi * progress))
    return SCHEDULE["final"] + (1.0 - SCHEDULE["final"]) * c


# ---------------------------------------------------------------- optimizers torch lacks


class Lamb(torch.optim.Optimizer):
    """LAMB (You et al.) as lamina defines it: the AdamW direction
    u = m_hat / (sqrt(v_hat) + eps) + weight_decay * p, scaled per tensor by the trust ratio
    |p| / |u| (1 when either norm is 0): p -= lr * trust * u."""

    def __init__(self, params, lr, betas, eps, weight_decay):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self):
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                st = self.state[p]
                if not st:
                    st["step"] = 0
                    st["m"] = torch.zeros_like(p)
                    st["v"] = torch.zeros_like(p)
                st["step"] += 1
                t = st["step"]
                m, v = st["m"], st["v"]
                m.mul_(b1).add_(g, alpha=1 - b1)
                v.mul_(b2).addcmul_(g, g, value=1 - b2)
                u = (m / (1 - b1**t)) / ((v / (1 - b2**t)).sqrt() + group["eps"])
                if group["weight_decay"] != 0:
                    u = u + group["weight_decay"] * p
                pn, un = p.norm(), u.norm()
                trust = torch.where((pn > 0) & (un > 0), pn / un, torch.ones_like(pn))
                p.sub_(group["lr"] * trust * u)


NS_COEFFS = (3.4445, -4.7750, 2.0315)


def newton_schulz(g, steps):
    """Keller Jordan's quintic Newton-Schulz iteration on G / (|G|_F + 1e-7), in f32; a tall
    matrix iterates on its transpose (A = X^T X, X = a X + X B)."""
    a, b, c = NS_COEFFS
    x = g / (g.norm() + 1e-7)
    tall = g.shape[0] > g.shape[1]
    for _ in range(steps):
        gram = x.t() @ x if tall else x @ x.t()
        poly = b * gram + c * (gram @ gram)
        x = a * x + (x @ poly if tall else poly @ x)
    return x


class Muon(torch.optim.Optimizer):
    """Muon (Jordan et al.) as lamina defines it, for 2-D weights: m = mu m + (1 - mu) g,
    u = (1 - mu) g + mu m (Nesterov) or m, p -= lr * (NS(u) sqrt(max(1, rows / cols)) +
    weight_decay * p). Drop-Muon passes a mask per parameter: 0 leaves the parameter and its
    momentum where they are."""

    def __init__(self, params, lr, momentum, nesterov, ns_steps, weight_decay):
        defaults = dict(
            lr=lr, momentum=momentum, nesterov=nesterov, ns_steps=ns_steps,
            weight_decay=weight_decay,
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, masks=None):
        for group in self.param_groups:
            mu = group["momentum"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                k = 1.0 if masks is None else masks.get(p, 1.0)
                st = self.state[p]
                if not st:
                    st["momentum"] = torch.zeros_like(p)
                buf = st["momentum"]
                m_new = mu * buf + (1 - mu) * g
                u = (1 - mu) * g + mu * m_new if group["nesterov"] else m_new
                buf.copy_(k * m_new + (1 - k) * buf)
                o = newton_schulz(u, group["ns_steps"])
                o = o * math.sqrt(max(1.0, p.shape[0] / p.shape[1]))
                if group["weight_decay"] != 0:
                    o = o + group["weight_decay"] * p
                p.sub_(group["lr"] * k * o)


# ---------------------------------------------------------------- the recipe's optimizers


def width_multiplier(name, p, rule):
    """AdamW's width scaling rule: a 2-D weight [out, in] (not a token, position or input
    table) gets lr / m and weight_decay * m with m = in / base width."""
    if WIDTH_SCALING is None or rule["rule"] != "adamw" or p.dim() != 2:
        return 1.0
    if ROLES[name] in ("embedding", "input"):
        return 1.0
    return p.shape[1] / WIDTH_SCALING


def build_optimizers(named):
    """One optimizer per rule kind, one parameter group per role (and width multiplier),
    in lamina's parameter order. Each group keeps its peak learning rate in `peak`."""
    groups = {}
    for name, role in ROLES.items():
        if name not in named:
            continue
        p = named[name]
        rule = RULES[role]
        mult = width_multiplier(name, p, rule)
        groups.setdefault((role, mult), []).append(p)
    by_kind = {}
    for (role, mult), params in groups.items():
        rule = RULES[role]
        g = dict(params=params, lr=rule["lr"] / mult, peak=rule["lr"] / mult)
        g["weight_decay"] = rule["weight_decay"] * mult
        if rule["rule"] in ("adamw", "lamb"):
            g["betas"], g["eps"] = rule["betas"], rule["eps"]
        elif rule["rule"] == "sgd":
            g["momentum"] = rule["momentum"]
            g["nesterov"] = rule["nesterov"] and rule["momentum"] > 0
        elif rule["rule"] == "muon":
            g["momentum"], g["nesterov"] = rule["momentum"], rule["nesterov"]
            g["ns_steps"] = rule["ns_steps"]
        by_kind.setdefault(rule["rule"], []).append(g)
    made = {}
    for kind, gs in by_kind.items():
        if kind == "sgd":
            made[kind] = torch.optim.SGD(gs, lr=gs[0]["lr"])
        elif kind == "adamw":
            made[kind] = torch.optim.AdamW(gs, lr=gs[0]["lr"], foreach=False)
        elif kind == "lamb":
            made[kind] = Lamb(gs, gs[0]["lr"], gs[0]["betas"], gs[0]["eps"], 0.0)
        else:
            made[kind] = Muon(gs, gs[0]["lr"], 0.95, True, 5, 0.0)
    return made


def drop_masks(named, t, data):
    """Drop-Muon: a start index s uniform over the Muon parameters (in lamina's order);
    parameters from s on are updated this step. The steps data.safetensors covers use the
    indices `lamina train` draws; later ones are drawn here from the seed and the step."""
    muon = [named[n] for n, r in ROLES.items() if n in named and RULES[r]["rule"] == "muon"]
    if not muon:
        return None
    start = data.drop_start(t)
    if start is None:
        gen = torch.Generator().manual_seed(SEED * 1_000_003 + 6 * 7919 + t)
        start = int(torch.randint(len(muon), (1,), generator=gen))
    return {p: (1.0 if i >= start else 0.0) for i, p in enumerate(muon)}


def add_noise(named, t):
    """Annealed gradient noise (Neelakantan et al.): N(0, eta / (1 + step)^gamma), step
    1-based, the same on every process."""
    scale = math.sqrt(NOISE["eta"] / (1.0 + (t + 1)) ** NOISE["gamma"])
    gen = torch.Generator().manual_seed(SEED * 1_000_003 + 5 * 7919 + t)
    for name in ROLES:
        p = named.get(name)
        if p is not None and p.grad is not None:
            noise = torch.randn(p.shape, generator=gen, dtype=p.dtype)
            p.grad.add_(scale * noise.to(p.grad.device))


# ---------------------------------------------------------------- data


class Data:
    """The training batches: the built-in task's batches that `lamina export` wrote
    (data.safetensors, cycled when the run is longer), or windows of a text file
    (--data, the char_lm task: the last 10% held out)."""

    def __init__(self, text=None):
        self.text = None
        if text is not None:
            with open(text, "rb") as f:
                raw = f.read()
            self.text = torch.tensor(list(raw), dtype=torch.int32)
            self.split = len(raw) - len(raw) // 10
            if self.split < LENGTH + 1 or len(raw) - self.split < LENGTH + 1:
                sys.exit(f"{text} is too short for windows of {LENGTH + 1} bytes")
            return
        path = os.path.join(HERE, "data.safetensors")
        if not os.path.exists(path):
            sys.exit("this task reads a text file: pass --data FILE")
        from safetensors.torch import load_file

        self.tensors = load_file(path)
        self.count = self.tensors["train." + INPUTS[0]].shape[0]

    def batch(self, t):
        if self.text is not None:
            gen = torch.Generator().manual_seed(SEED * 1_000_003 + 7919 + t)
            starts = torch.randint(self.split - LENGTH, (BATCH,), generator=gen)
            return self.windows(starts)
        i = t % self.count
        return [self.tensors[f"train.{n}"][i] for n in INPUTS]

    def drop_start(self, t):
        starts = None if self.text is not None else self.tensors.get("drop_muon.start")
        if starts is None or t >= starts.shape[0]:
            return None
        return int(starts[t])

    def windows(self, starts):
        w = torch.stack([self.text[s : s + LENGTH + 1] for s in starts.tolist()])
        return [w[:, :-1], w[:, 1:]]

    def eval_batches(self):
        """(inputs, targets, real rows, scored positions or None) of the held-out set."""
        if self.text is not None:
            room = len(self.text) - self.split - LENGTH
            n = max(min(8 * BATCH, room), 1)
            starts = torch.tensor([self.split + i * room // n for i in range(n)])
            out = []
            for k in range(0, n, BATCH):
                s = starts[k : k + BATCH]
                rows = len(s)
                s = torch.cat([s, s[:1].repeat(BATCH - rows)])
                out.append((*self.windows(s), rows, None))
            return out
        if "eval.targets" not in self.tensors:
            return []
        pos = self.tensors.get("eval.positions")
        x, y, rows = (self.tensors[f"eval.{n}"] for n in (INPUTS[0], "targets", "rows"))
        return [(x[i], y[i], int(rows[i]), pos) for i in range(x.shape[0])]


def shard(tensors, rank, world):
    """This process's rows of a global batch."""
    if world == 1:
        return tensors
    b = tensors[0].shape[0]
    if b % world:
        sys.exit(f"the batch of {b} rows does not split over {world} processes")
    n = b // world
    return [t[rank * n : (rank + 1) * n] for t in tensors]


def evaluate(model, data):
    """Held-out loss and accuracy, scored as `lamina train` scores them: in eval mode, so
    without dropout, as lamina evaluates."""
    mode = model.training
    model.eval()
    try:
        return score(model, data)
    finally:
        model.train(mode)


@torch.no_grad()
def score(model, data):
    loss, correct, count = 0.0, 0, 0
    for x, y, rows, pos in data.eval_batches():
        _, logits = model(x, y)
        logits, y = logits[:rows].double(), y[:rows]
        if TASK == "regression":
            loss += float(((logits - y.double()) ** 2).mean(-1).sum())
            count += rows
            continue
        if logits.dim() == 3:
            if pos is not None:
                logits, y = logits[:, pos.long()], y[:, pos.long()]
            logits, y = logits.reshape(-1, logits.shape[-1]), y.reshape(-1)
        y = y.long()
        loss += float(F.cross_entropy(logits, y, reduction="sum"))
        correct += int((logits.argmax(-1) == y).sum())
        count += y.numel()
    if count == 0:
        return None
    acc = None if TASK == "regression" else correct / count
    return loss / count, acc


# ---------------------------------------------------------------- the run


def wrap(model, fsdp, world):
    """DistributedDataParallel, or FSDP (fully_shard) with --fsdp, when torchrun started
    more than one process."""
    if fsdp:
        from torch.distributed.fsdp import fully_shard

        for block in model.blocks.values() if hasattr(model.blocks, "values") else model.blocks:
            fully_shard(block)
        fully_shard(model)
        return model, model
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel

        ddp = DistributedDataParallel(model)
        return ddp, model
    return model, model


def full_state(model, fsdp):
    """Every weight as a whole tensor (gathered from the shards under FSDP)."""
    state = model.state_dict()
    if fsdp:
        state = {k: v.full_tensor() if hasattr(v, "full_tensor") else v for k, v in state.items()}
    return {k: v.detach().contiguous().cpu() for k, v in state.items()}


def save(state, path, step):
    from safetensors.torch import save_file

    tmp = path + ".tmp"
    save_file(state, tmp, metadata={"step": str(step), "model": MODEL_NAME})
    os.replace(tmp, path)


def main(argv):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", help="a text file: train the char_lm task on its bytes")
    ap.add_argument("--steps", type=int, default=STEPS, help=f"steps to run (default {STEPS})")
    ap.add_argument("--init", help="start from these lamina weights (lamina init / a run)")
    ap.add_argument("--out", default=None, help="run directory (default runs/<model>-torch)")
    ap.add_argument("--fsdp", action="store_true", help="shard parameters with FSDP")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per process")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if args.fsdp and "RANK" not in os.environ:
        sys.exit("--fsdp shards over processes: run under torchrun --nproc-per-node N")
    if world > 1 or args.fsdp:
        dist.init_process_group("gloo")
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(SEED)
    model = Model()
    if args.init:
        load_lamina(model, args.init)
    run, inner = wrap(model, args.fsdp, world)
    named = {n: p for n, p in inner.named_parameters() if p.requires_grad}
    optimizers = build_optimizers(named)
    data = Data(args.data)
    out = args.out or os.path.join("runs", f"{MODEL_NAME}-torch")
    if rank == 0:
        os.makedirs(out, exist_ok=True)
        log = open(os.path.join(out, "log.jsonl"), "w")
    start = time.time()
    for t in range(args.steps):
        factor = schedule(t)
        for opt in optimizers.values():
            for g in opt.param_groups:
                g["lr"] = g["peak"] * factor
            opt.zero_grad(set_to_none=True)
        x, y = shard(data.batch(t), rank, world)
        loss, _ = run(x, y)
        loss.backward()
        if CLIP is not None:
            # min(1, clip / (|g| + 1e-6)) over every gradient, as lamina clips
            torch.nn.utils.clip_grad_norm_(list(named.values()), CLIP)
        if NOISE is not None:
            add_noise(named, t)
        for kind, opt in optimizers.items():
            if kind == "muon" and DROP_MUON:
                opt.step(drop_masks(named, t, data))
            else:
                opt.step()
        value = loss.detach().clone()
        if world > 1:
            dist.all_reduce(value)
            value /= world
        line = {"step": t + 1, "loss": float(value), "lr": RULES[next(iter(RULES))]["lr"] * factor}
        if (t + 1) % EVAL_EVERY == 0 or t + 1 == args.steps:
            scored = evaluate(inner if not args.fsdp else run, data)
            if scored is not None:
                line["eval_loss"] = scored[0]
                if scored[1] is not None:
                    line["eval_accuracy"] = scored[1]
            state = full_state(inner, args.fsdp)
            if rank == 0:
                save(state, os.path.join(out, "checkpoint.safetensors"), t + 1)
        line["train_s"] = round(time.time() - start, 3)
        if rank == 0:
            log.write(json.dumps(line) + "\n")
            log.flush()
            if not args.quiet:
                print(json.dumps(line), flush=True)
    state = full_state(inner, args.fsdp)
    if rank == 0:
        save(state, os.path.join(out, "final.safetensors"), args.steps)
        print(f"wrote {out}/final.safetensors", flush=True)
    if world > 1 or args.fsdp:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(sys.argv[1:])
