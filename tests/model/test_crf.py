"""The CRF against brute-force enumeration of every tag path, and the NEZHA+CRF token classifier."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from nezha.model.config import NezhaConfig
from nezha.model.crf import CRF, NezhaCrfForTokenClassification, compact, token_classifier_class
from nezha.model.modeling import NezhaForTokenClassification


@torch.no_grad()
def _path_score(crf: CRF, emis: torch.Tensor, path: tuple[int, ...]) -> float:
    s = crf.start_transitions[path[0]] + emis[0, path[0]]
    for t in range(1, len(path)):
        s = s + crf.transitions[path[t - 1], path[t]] + emis[t, path[t]]
    return float(s + crf.end_transitions[path[-1]])


def _random_case(seed: int, B=4, L=5, N=3):
    g = torch.Generator().manual_seed(seed)
    crf = CRF(N)
    with torch.no_grad():
        for p in crf.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
    emis = torch.randn(B, L, N, generator=g)
    lengths = torch.tensor([L, 1, 3, 0][:B])
    mask = torch.arange(L)[None, :] < lengths[:, None]
    tags = torch.randint(0, N, (B, L), generator=g)
    return crf, emis, tags, mask, lengths


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_crf_log_likelihood_matches_brute_force(seed):
    crf, emis, tags, mask, lengths = _random_case(seed)
    ll = crf.log_likelihood(emis, tags, mask).detach()
    for b in range(emis.size(0)):
        n = int(lengths[b])
        if n == 0:
            assert float(ll[b]) == 0.0
            continue
        scores = [_path_score(crf, emis[b], p) for p in itertools.product(range(3), repeat=n)]
        log_z = math.log(sum(math.exp(s) for s in scores))
        gold = _path_score(crf, emis[b], tuple(tags[b, :n].tolist()))
        assert float(ll[b]) == pytest.approx(gold - log_z, abs=1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_crf_viterbi_matches_brute_force(seed):
    crf, emis, _, mask, lengths = _random_case(seed, N=4)
    paths = crf.decode(emis, mask)
    for b in range(emis.size(0)):
        n = int(lengths[b])
        if n == 0:
            assert paths[b] == []
            continue
        best = max(itertools.product(range(4), repeat=n), key=lambda p: _path_score(crf, emis[b], p))
        assert tuple(paths[b]) == best


def test_crf_probabilities_sum_to_one():
    crf, emis, _, mask, _ = _random_case(5, B=1, L=3, N=3)
    total = sum(math.exp(float(crf.log_likelihood(emis, torch.tensor([p]), mask).detach()))
                for p in itertools.product(range(3), repeat=3))
    assert total == pytest.approx(1.0, abs=1e-5)


def test_crf_rejects_non_prefix_mask():
    crf = CRF(2)
    with pytest.raises(ValueError, match="prefix"):
        crf.decode(torch.zeros(1, 3, 2), torch.tensor([[True, False, True]]))


def test_compact_moves_kept_positions_first():
    v = torch.tensor([[10, 11, 12, 13], [20, 21, 22, 23]])
    out, mask = compact(v, torch.tensor([[0, 1, 0, 1], [1, 1, 1, 0]]))
    assert out[0, :2].tolist() == [11, 13] and out[1].tolist() == [20, 21, 22]
    assert mask.tolist() == [[True, True, False], [True, True, True]]


def test_crf_token_classifier_trains_saves_and_loads(tmp_path):
    torch.manual_seed(0)
    config = NezhaConfig.preset("tiny", vocab_size=50, num_hidden_layers=1, hidden_size=32, num_attention_heads=2,
                                intermediate_size=64, num_labels=3, hidden_dropout_prob=0.0,
                                attention_probs_dropout_prob=0.0)
    model = NezhaCrfForTokenClassification(config)
    ids = torch.randint(5, 50, (4, 8))
    labels = torch.full((4, 8), -100)
    labels[:, 1:7] = (ids[:, 1:7] % 3)  # a learnable rule: tag = id mod 3
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(60):
        loss = model(ids, labels=labels).loss
        first = first if first is not None else float(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert float(loss) < first / 4
    model.eval()
    logits = model(ids).logits
    assert model.decode(logits, labels != -100) == [r[1:7].tolist() for r in ids % 3]
    model.save_pretrained(tmp_path / "m")
    loaded_config = NezhaConfig.from_json(tmp_path / "m")
    cls = token_classifier_class(loaded_config)
    assert cls is NezhaCrfForTokenClassification
    again = cls.from_pretrained(tmp_path / "m")
    torch.testing.assert_close(again.crf.transitions, model.crf.transitions)
    # a plain backbone/token-classifier folder loads into the CRF class with the CRF freshly initialised
    plain = NezhaForTokenClassification(NezhaConfig.preset("tiny", vocab_size=50, num_labels=3))
    plain.save_pretrained(tmp_path / "plain")
    crf_model = NezhaCrfForTokenClassification.from_pretrained(tmp_path / "plain")
    assert any(k.startswith("crf.") for k in crf_model.loading_report.newly_initialized)
