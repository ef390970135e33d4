"""The quickstart's figures (``summary.json``), its report (``report.md``) and plots, read from a finished run folder.

Fine-tuning folders are named ``{task}-{init}-n{labelled}-s{seed}``; the headline regime (one number of labelled
examples, several seeds) gives the table with mean ± spread, every number of labelled examples gives a point of the
learning curve.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

TASKS = {"sentiment": "accuracy", "ner": "f1"}  # task -> headline metric
INITS = ("pretrained", "random")


def run_dir(out: Path, task: str, init: str, labelled: int, seed: int) -> Path:
    """Folder of one fine-tuning run."""
    return out / f"{task}-{init}-n{labelled}-s{seed}"


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def mean_sd(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (0 for a single value)."""
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def _pretrain_figures(out: Path) -> dict:
    pre = _load(out / "pretrained" / "summary.json")
    first = None
    with (out / "pretrained" / "metrics.jsonl").open(encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            if rec.get("split") == "train" and "loss" in rec:
                first = rec
                break
    return {"first_loss": first["loss"] if first else None, "last_loss": pre["train"]["loss"],
            "mlm_acc": pre["train"]["mlm_acc"], "eval_mlm_acc": (pre.get("eval") or {}).get("mlm_acc"),
            "unigram_mlm_acc": pre["baseline"]["unigram_mlm_acc"], "steps": pre["step"],
            "seq_per_s": pre["train"].get("seq_per_s")}


def _run_figures(task: str, ev: dict) -> dict:
    if task == "sentiment":
        return {"accuracy": ev["accuracy"], "macro_f1": ev["macro_f1"]}
    return {"f1": ev["f1"], "per_type": {t: v["f1"] for t, v in ev["entity"]["per_type"].items()}}


def _baseline(task: str, ev: dict) -> dict:
    if task == "sentiment":
        return {"accuracy": ev["baseline_majority"]["accuracy"], "macro_f1": ev["baseline_majority"]["macro_f1"]}
    return {"f1": ev["baseline_all_o"]["f1"]}


def summarize(out: Path, labelled: list[int], headline: int, seeds: list[int]) -> dict:
    """The figures of a finished run. For each task: ``pretrained`` / ``random`` hold the headline regime's means
    (``*_sd`` the spread, ``runs`` each seed's figures), ``baseline`` the trivial one, ``curve`` every point."""
    res: dict = {"pretrain": _pretrain_figures(out), "regime": {"labelled": headline, "seeds": seeds,
                                                               "curve_labelled": labelled}}
    for task, metric in TASKS.items():
        row: dict = {"curve": {}}
        for init in INITS:
            runs = [_load(run_dir(out, task, init, headline, s) / "metrics.json")["eval"] for s in seeds]
            row["baseline"] = _baseline(task, runs[0])
            figs = [_run_figures(task, ev) for ev in runs]
            agg = {k: mean_sd([f[k] for f in figs]) for k in figs[0] if k != "per_type"}
            row[init] = {k: m for k, (m, _) in agg.items()} | {f"{k}_sd": sd for k, (_, sd) in agg.items()}
            row[init]["runs"] = [f[metric] for f in figs]
            if task == "ner":
                types = sorted({t for f in figs for t in f["per_type"]})
                row[init]["per_type"] = {t: statistics.fmean(f["per_type"].get(t, 0.0) for f in figs) for t in types}
            curve = {}
            for n in labelled:
                ns = seeds if n == headline else seeds[:1]
                curve[str(n)] = [_load(run_dir(out, task, init, n, s) / "metrics.json")["eval"][metric] for s in ns]
            row["curve"][init] = curve
        row["gain"] = row["pretrained"][metric] - row["random"][metric]
        res[task] = row
    return res


def plot_learning_curve(s: dict, path: Path) -> None:
    """Held-out score vs number of labelled examples, pretrained vs random init (error bars: spread over seeds)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(8, 3.3))
    for ax, (task, metric), title in zip(axes, TASKS.items(), ("review sentiment", "People's Daily NER")):
        for init, style in zip(INITS, ("o-", "s--")):
            pts = sorted((int(n), mean_sd(v)) for n, v in s[task]["curve"][init].items())
            ax.errorbar([n for n, _ in pts], [m for _, (m, _) in pts], yerr=[sd for _, (_, sd) in pts],
                        fmt=style, capsize=3, label=f"from {init} init" if init == "random" else "pretrained NEZHA")
        ax.axhline(s[task]["baseline"][metric], color="grey", lw=1, ls=":", label="trivial baseline")
        ax.set_xscale("log")
        ax.set_xlabel("labelled training examples")
        ax.set_ylabel("held-out " + ("accuracy" if metric == "accuracy" else "entity F1"))
        ax.set_title(title)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_ner_per_type(ner: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    types = sorted(ner["pretrained"]["per_type"])
    xs = range(len(types))
    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.bar([x - 0.2 for x in xs], [ner["random"]["per_type"].get(t, 0.0) for t in types], 0.4, label="random init")
    ax.bar([x + 0.2 for x in xs], [ner["pretrained"]["per_type"][t] for t in types], 0.4, label="pretrained")
    ax.set_xticks(list(xs), types)
    ax.set_ylabel("entity F1")
    ax.set_ylim(0, 1)
    ax.set_title("People's Daily NER, held-out")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _fmt(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.3f}"


def _pm(row: dict, key: str) -> str:
    return f"{row[key]:.3f} ± {row[key + '_sd']:.3f}"


def write_report(out: Path, s: dict, *, header: list[str], recipe: str, commands: list[str], timings: dict) -> Path:
    """``report.md`` and ``summary.json`` from the figures ``s`` (see :func:`summarize`)."""
    from nezha.io.atomic import atomic_write_text

    p, sent, ner, reg = s["pretrain"], s["sentiment"], s["ner"], s["regime"]
    plot_ner_per_type(ner, out / "ner_per_type_f1.png")
    plot_learning_curve(s, out / "learning_curve.png")
    n, seeds = reg["labelled"], reg["seeds"]
    first = run_dir(out, "sentiment", "pretrained", n, seeds[0]).name
    first_ner = run_dir(out, "ner", "pretrained", n, seeds[0]).name
    curve_rows = []
    for task, metric in TASKS.items():
        for m in reg["curve_labelled"]:
            pre, rnd = (mean_sd(s[task]["curve"][i][str(m)]) for i in INITS)
            k = len(s[task]["curve"]["pretrained"][str(m)])
            curve_rows.append(f"| {task} | {metric} | {m} | {k} | {rnd[0]:.3f} | {pre[0]:.3f} "
                              f"| {pre[0] - rnd[0]:+.3f} |")
    lines = [
        *header,
        "",
        f"## Pretraining ({recipe})",
        "",
        "| | value |",
        "|---|---|",
        f"| steps | {p['steps']} |",
        f"| training loss, first logged → last | {_fmt(p['first_loss'])} → {p['last_loss']:.3f} |",
        f"| MLM accuracy (train, last logged steps) | {p['mlm_acc']:.3f} |",
        f"| MLM accuracy (held-out 5% of the text) | {_fmt(p['eval_mlm_acc'])} |",
        f"| unigram baseline MLM accuracy (always the most frequent token) | {p['unigram_mlm_acc']:.3f} |",
        f"| training speed (sequences/s) | {p['seq_per_s'] or 0:.0f} |",
        "",
        "![pretraining curves](pretrained/metrics.png)",
        "",
        f"## Fine-tuning with {n} labelled examples, {len(seeds)} seed(s), held-out data",
        "",
        f"Both initialisations get the same {n} labelled training examples (the first {n} of the training split), the "
        "same steps, learning rate and seeds; a seed sets the classifier's initialisation, dropout and data order. "
        "Figures are mean ± standard deviation over the seeds.",
        "",
        "| task | metric | trivial baseline | from random init | from pretrained NEZHA | pretrained − random |",
        "|---|---|---|---|---|---|",
        f"| review sentiment | accuracy | {sent['baseline']['accuracy']:.3f} (majority class) | "
        f"{_pm(sent['random'], 'accuracy')} | {_pm(sent['pretrained'], 'accuracy')} | {sent['gain']:+.3f} |",
        f"| review sentiment | macro-F1 | {sent['baseline']['macro_f1']:.3f} | {_pm(sent['random'], 'macro_f1')} | "
        f"{_pm(sent['pretrained'], 'macro_f1')} | "
        f"{sent['pretrained']['macro_f1'] - sent['random']['macro_f1']:+.3f} |",
        f"| People's Daily NER | entity F1 (strict) | {ner['baseline']['f1']:.3f} (all O) | "
        f"{_pm(ner['random'], 'f1')} | {_pm(ner['pretrained'], 'f1')} | {ner['gain']:+.3f} |",
        "",
        "Value of pretraining (pretrained − random init): "
        f"sentiment accuracy {sent['gain']:+.3f}, NER entity F1 {ner['gain']:+.3f}.",
        "",
        "Each seed: " + "; ".join(
            f"{task} {init} " + ", ".join(f"{v:.3f}" for v in s[task][init]["runs"])
            for task in TASKS for init in INITS) + ".",
        "",
        "## What pretraining buys: score vs number of labelled examples",
        "",
        "![learning curve](learning_curve.png)",
        "",
        "| task | metric | labelled | seeds | from random init | from pretrained | pretrained − random |",
        "|---|---|---|---|---|---|---|",
        *curve_rows,
        "",
        f"NER entity F1 per type ({n} labelled, mean over seeds):",
        "",
        "| type | from random init | from pretrained |",
        "|---|---|---|",
        *(f"| {t} | {ner['random']['per_type'].get(t, 0.0):.3f} | {v:.3f} |"
          for t, v in sorted(ner["pretrained"]["per_type"].items())),
        "",
        "![NER per-type F1](ner_per_type_f1.png)",
        "",
        f"Sentiment confusion matrix and training curves (pretrained, {n} labelled, seed {seeds[0]}):",
        "",
        f"![confusion matrix]({first}/confusion_matrix.png)",
        f"![sentiment curves]({first}/training_curves.png)",
        f"![NER curves]({first_ner}/training_curves.png)",
        "",
        "## Commands (what each step ran)",
        "",
        "```bash",
        *commands,
        "```",
        "",
        "Step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in timings.items()),
        "",
    ]
    report = out / "report.md"
    atomic_write_text(report, "\n".join(lines))
    atomic_write_text(out / "summary.json", json.dumps(s, indent=2, ensure_ascii=False) + "\n")
    return report
