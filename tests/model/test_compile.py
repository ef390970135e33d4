"""torch.compile cleanliness: the attention function and every model head trace into one graph, train and eval."""

from __future__ import annotations

import pytest
import torch
import torch._dynamo as dynamo

import nezha
from nezha.model.attention import relative_attention
from nezha.model.positions import relative_position_table

HEADS = ("NezhaModel", "NezhaForPreTraining", "NezhaForMaskedLM", "NezhaForSequenceClassification",
         "NezhaForTokenClassification", "NezhaForQuestionAnswering")


def _breaks(fn, *args, **kwargs) -> list[str]:
    dynamo.reset()
    try:
        explained = dynamo.explain(fn)(*args, **kwargs)
    finally:
        dynamo.reset()
    return [b.reason.splitlines()[0] for b in explained.break_reasons]


def _attention_inputs(requires_grad: bool):
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 40, 8, requires_grad=requires_grad) for _ in range(3))
    mask = torch.zeros(2, 1, 1, 40)
    mask[1, ..., 30:] = torch.finfo(torch.float32).min
    return q, k, v, relative_position_table(6, 8), mask


@pytest.mark.parametrize("dropout_p", [0.0, 0.1])
@pytest.mark.parametrize("grad", [True, False], ids=["train", "inference"])
def test_attention_has_no_graph_breaks(grad, dropout_p):
    q, k, v, table, mask = _attention_inputs(grad)
    with torch.set_grad_enabled(grad):
        breaks = _breaks(lambda q, k, v: relative_attention(q, k, v, table, mask, max_relative_position=6,
                                                            dropout_p=dropout_p), q, k, v)
    assert breaks == []


@pytest.mark.slow
def test_compiled_attention_matches_eager():
    """The compiled graph (forward and the custom backward) computes what the eager path does."""
    q, k, v, table, mask = _attention_inputs(True)

    def fn(q, k, v):
        return relative_attention(q, k, v, table, mask, max_relative_position=6)

    dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True)
    out = compiled(q, k, v)
    ref = fn(q, k, v)
    torch.testing.assert_close(out, ref)
    for a, b in zip(torch.autograd.grad(out.square().sum(), (q, k, v)),
                    torch.autograd.grad(ref.square().sum(), (q, k, v))):
        torch.testing.assert_close(a, b)
    dynamo.reset()


@pytest.mark.parametrize("train", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("head", HEADS)
def test_model_has_no_graph_breaks(head, train):
    cfg = nezha.NezhaConfig(vocab_size=97, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                            intermediate_size=37, max_relative_position=5, num_labels=3)
    model = getattr(nezha, head)(cfg).train(train)
    ids = torch.randint(1, 97, (2, 12))
    mask = torch.ones(2, 12, dtype=torch.long)
    mask[1, 8:] = 0
    with torch.set_grad_enabled(train):
        assert _breaks(model, ids, attention_mask=mask) == []
