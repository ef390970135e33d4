"""Pretraining throughput: sequences/s and tokens/s of full optimizer steps (forward, backward, clip, LAMB).

Runs the trainer's own step (``nezha.train.loop.train_step`` with the pretraining loss of ``nezha.train.pretrain``)
on random token batches for the tiny/small and base configs. Two ratios are measured in the same run, against a
baseline alongside:

* ``masked_head_speedup``: MLM head on the masked positions only (``masked_positions=``, what the trainer does) vs the
  vocabulary projection over every position (what a plain ``(B, T, V)`` head costs);
* ``lamb_foreach_speedup``: our ``torch._foreach`` LAMB step vs a per-tensor loop of the same formulas.

On a GPU it also reports model FLOPs utilisation: FLOPs per step = 6·(non-embedding params)·tokens
+ 6·E·V·masked tokens (the tied decoder) + 24·L·E·T per token (attention scores and context, doubled for NEZHA's
relative-position key and value terms), divided by time and ``--peak_tflops`` (bf16 dense; H100/H200 SXM 989).

    python benchmarks/bench_pretrain.py                       # CPU: tiny, small, base (short runs)
    python benchmarks/bench_pretrain.py --configs base --batch 64 --seq 128 --precision bf16   # on a GPU
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import time
from pathlib import Path

import torch

from nezha.model.config import NezhaConfig
from nezha.model.modeling import NezhaForPreTraining
from nezha.train.distributed import DistInfo, wrap_model
from nezha.train.loop import Precision, train_step
from nezha.train.optim import build_optimizer
from nezha.train.pretrain import pretraining_sums

RESULTS = Path(__file__).resolve().parent / "results"
PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0, "L4": 121.0, "A10": 125.0}


def make_batch(cfg: NezhaConfig, batch: int, seq: int, max_pred: int, device, gen) -> dict:
    ids = torch.randint(106, cfg.vocab_size, (batch, seq), generator=gen)
    pos = torch.stack([torch.randperm(seq - 1, generator=gen)[:max_pred] + 1 for _ in range(batch)])
    return {
        "input_ids": ids.to(device),
        "token_type_ids": (torch.arange(seq) >= seq // 2).long().expand(batch, seq).contiguous().to(device),
        "attention_mask": torch.ones(batch, seq, dtype=torch.long, device=device),
        "masked_positions": pos.to(device),
        "labels": torch.gather(ids, 1, pos).to(device),
        "next_sentence_label": torch.randint(0, 2, (batch,), generator=gen).to(device),
        "nsp_weight": torch.ones(batch, device=device),
    }


def full_head_sums(engine, mb):
    """Baseline: the vocabulary projection over all T positions, then pick the masked ones for the loss."""
    out = engine(input_ids=mb["input_ids"], attention_mask=mb["attention_mask"], token_type_ids=mb["token_type_ids"])
    logits = out.prediction_logits.float()  # (B, T, V)
    idx = mb["masked_positions"].unsqueeze(-1).expand(-1, -1, logits.size(-1))
    picked = torch.gather(logits, 1, idx)  # (B, M, V)
    mlm = torch.nn.functional.cross_entropy(picked.reshape(-1, picked.size(-1)), mb["labels"].reshape(-1),
                                            reduction="sum")
    nsp = torch.nn.functional.cross_entropy(out.seq_relationship_logits.float(), mb["next_sentence_label"],
                                            reduction="sum")
    return mlm, nsp, {}


def flops_per_step(cfg: NezhaConfig, model, batch: int, seq: int, max_pred: int) -> float:
    n_embed = cfg.vocab_size * cfg.hidden_size + cfg.type_vocab_size * cfg.hidden_size
    n_params = sum(p.numel() for p in model.parameters())
    tokens = batch * seq
    dense = 6.0 * (n_params - n_embed) * tokens
    decoder = 6.0 * cfg.hidden_size * cfg.vocab_size * batch * max_pred
    attention = 24.0 * cfg.num_hidden_layers * cfg.hidden_size * seq * tokens
    return dense + decoder + attention


def make_stepper(model_cfg: NezhaConfig, *, batch: int, seq: int, max_pred: int, precision: Precision, device,
                 masked_head: bool = True, optimizer: str = "lamb"):
    """A closure running one full optimizer step, plus the model (built once, reused across timing rounds)."""
    torch.manual_seed(0)
    model = NezhaForPreTraining(model_cfg)
    wrapped = wrap_model(model, DistInfo(device=device))
    opt = build_optimizer(model, optimizer, lr=1e-4)
    scaler = precision.grad_scaler()
    mb = make_batch(model_cfg, batch, seq, max_pred, device, torch.Generator().manual_seed(0))
    n_masked = float(batch * max_pred)
    sums = pretraining_sums if masked_head else full_head_sums

    def loss_fn(engine, b):
        mlm, nsp, stats = sums(engine, b)
        return mlm / n_masked + nsp / batch, stats

    def step() -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        train_step(wrapped, [mb], loss_fn, opt, scaler, precision, max_grad_norm=1.0)
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    return step, model


def time_interleaved(steppers: dict, *, steps: int, warmup: int, rounds: int) -> dict[str, float]:
    """Median step time of each stepper, rounds interleaved so machine noise hits all alike; best round kept."""
    for fn in steppers.values():
        for _ in range(warmup):
            fn()
    best = dict.fromkeys(steppers, math.inf)
    for _ in range(rounds):
        for name, fn in steppers.items():
            best[name] = min(best[name], statistics.median(fn() for _ in range(steps)))
    return best


def lamb_step_ratio(cfg: NezhaConfig, device, repeats: int) -> dict:
    """Time one LAMB step (foreach) vs the same formulas applied tensor by tensor, on the model's parameters."""
    torch.manual_seed(0)
    model = NezhaForPreTraining(cfg).to(device)
    for p in model.parameters():
        p.grad = torch.randn_like(p) * 1e-3
    opt = build_optimizer(model, "lamb", lr=1e-4)
    params = [p for g in opt.param_groups for p in g["params"]]
    wds = [g["weight_decay"] for g in opt.param_groups for _ in g["params"]]
    state = [(torch.zeros_like(p), torch.zeros_like(p)) for p in params]

    @torch.no_grad()
    def per_tensor(t: int):
        for p, wd, (m, v) in zip(params, wds, state):
            g = p.grad
            m.mul_(0.9).add_(g, alpha=0.1)
            v.mul_(0.999).addcmul_(g, g, value=0.001)
            u = (m / (1 - 0.9**t)) / ((v / (1 - 0.999**t)).sqrt() + 1e-6)
            if wd:
                u.add_(p, alpha=wd)
            wn, un = p.norm(), u.norm()
            r = torch.where((wn > 0) & (un > 0), (wn / un).clamp(0, 10), torch.ones_like(wn))
            p.sub_(u * (1e-4 * r))

    def clock(fn) -> float:
        ts = []
        for i in range(repeats + 1):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            fn(i + 1)
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i:
                ts.append(time.perf_counter() - t)
        return statistics.median(ts)

    t_foreach, t_loop = [], []
    for _ in range(2):  # interleave so machine noise hits both
        t_foreach.append(clock(lambda t: opt.step()))
        t_loop.append(clock(per_tensor))
    f, lp = min(t_foreach), min(t_loop)
    return {"foreach_step_s": f, "per_tensor_step_s": lp, "lamb_foreach_speedup": lp / f, "num_tensors": len(params)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", nargs="+", default=["tiny", "small", "base"])
    ap.add_argument("--batch", type=int, default=None, help="default: 16 (tiny/small), 8 (base) on CPU; 64 on GPU")
    ap.add_argument("--seq", type=int, default=128)
    ap.add_argument("--max_pred", type=int, default=20)
    ap.add_argument("--steps", type=int, default=None, help="timed steps per round (default 3 on CPU, 20 on GPU)")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--peak_tflops", type=float, default=None, help="bf16 dense peak of the GPU (auto for known ones)")
    ap.add_argument("--out", default=str(RESULTS / "bench_pretrain.json"))
    args = ap.parse_args(argv)

    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if args.device == "auto" else args.device))
    precision = Precision.resolve(args.precision, device)
    gpu = device.type == "cuda"
    peak = args.peak_tflops
    name = torch.cuda.get_device_name(device) if gpu else platform.processor() or platform.machine()
    if gpu and peak is None:
        peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    steps = args.steps or (20 if gpu else 3)
    results = {"device": name, "precision": precision.name, "torch": torch.__version__,
               "threads": torch.get_num_threads(), "configs": {}}
    for cname in args.configs:
        cfg = NezhaConfig.preset(cname, hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1)
        batch = args.batch or (64 if gpu else (8 if cname in ("base", "large") else 16))
        cpu_big = not gpu and cname in ("base", "large")
        n_steps = 1 if cpu_big and args.steps is None else steps
        kw = dict(batch=batch, seq=args.seq, max_pred=args.max_pred, precision=precision, device=device)
        masked_fn, model = make_stepper(cfg, **kw)
        full_fn, _ = make_stepper(cfg, **kw, masked_head=False)
        t = time_interleaved({"masked": masked_fn, "full": full_fn}, steps=n_steps, warmup=1 if not gpu else 3,
                             rounds=2 if cpu_big else 3)
        flops = flops_per_step(cfg, model, batch, args.seq, args.max_pred)
        masked = {"batch": batch, "seq": args.seq, "max_pred": args.max_pred, "step_s": t["masked"],
                  "seq_per_s": batch / t["masked"], "tokens_per_s": batch * args.seq / t["masked"],
                  "params": sum(p.numel() for p in model.parameters()), "flops_per_step": flops,
                  "achieved_tflops": flops / t["masked"] / 1e12}
        row = {"masked_head": masked, "full_head": {"step_s": t["full"], "seq_per_s": batch / t["full"]},
               "masked_head_speedup": t["full"] / t["masked"]}
        del model
        if peak:
            row["mfu"] = masked["achieved_tflops"] / peak
        row.update(lamb_step_ratio(cfg, device, repeats=3 if cpu_big else 10))
        results["configs"][cname] = row
        mfu = f", MFU {row['mfu']:.1%}" if peak else ""
        print(f"{cname:6s} batch {batch} seq {args.seq}: {masked['seq_per_s']:8.1f} seq/s "
              f"{masked['tokens_per_s']:10.0f} tok/s ({masked['achieved_tflops']:.3f} TFLOP/s{mfu}); "
              f"masked-only MLM head x{row['masked_head_speedup']:.2f} vs full head; "
              f"LAMB foreach x{row['lamb_foreach_speedup']:.2f} vs per-tensor ({row['num_tensors']} tensors)",
              flush=True)
    if peak:
        results["peak_tflops"] = peak
    results["flops_formula"] = ("6*(params - embeddings)*tokens + 6*E*V*masked_tokens + 24*L*E*T*tokens "
                                "(attention incl. relative key/value terms)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")
    return 0 if all(math.isfinite(r["masked_head"]["step_s"]) for r in results["configs"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
