"""A linear-chain CRF and the NEZHA token classifier with a CRF on top.

Shape legend: ``B`` batch, ``T`` positions, ``L`` labelled positions per sequence, ``N`` tags, ``E`` hidden size.

The CRF scores a tag path as ``start[y_0] + sum_t emit[t, y_t] + sum_t trans[y_{t-1}, y_t] + end[y_last]``; training
maximises the log-likelihood (forward algorithm), prediction takes the best path (Viterbi). Sequences may have
different lengths: ``mask`` marks a prefix of real positions per row (rows may be empty).
"""

from __future__ import annotations

import torch
from torch import nn

from nezha.model.config import NezhaConfig
from nezha.model.modeling import NezhaForTokenClassification, TokenClassifierOutput


class CRF(nn.Module):
    """Transition scores between ``num_tags`` tags, plus start and end scores."""

    def __init__(self, num_tags: int):
        super().__init__()
        if num_tags <= 0:
            raise ValueError(f"CRF needs at least one tag, got {num_tags}")
        self.num_tags = num_tags
        self.start_transitions = nn.Parameter(torch.empty(num_tags))
        self.end_transitions = nn.Parameter(torch.empty(num_tags))
        self.transitions = nn.Parameter(torch.empty(num_tags, num_tags))  # [from, to]
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for p in (self.start_transitions, self.end_transitions, self.transitions):
            nn.init.uniform_(p, -0.1, 0.1)

    @staticmethod
    def _lengths(mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.long().sum(1)  # (B,)
        prefix = torch.arange(mask.size(1), device=mask.device)[None, :] < lengths[:, None]
        if not torch.equal(prefix, mask.bool()):
            raise ValueError("CRF mask must mark a prefix of each row (real positions first, then padding)")
        return lengths

    def log_likelihood(self, emissions: torch.Tensor, tags: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Per-sequence ``log p(tags | emissions)``, shape ``(B,)``; 0 for empty rows.

        Args:
            emissions: ``(B, L, N)`` unnormalised tag scores.
            tags: ``(B, L)`` gold tag ids (anything in range at masked positions).
            mask: ``(B, L)`` bool, a prefix of True per row.
        """
        emissions = emissions.float()
        lengths = self._lengths(mask)
        tags = tags.masked_fill(~mask.bool(), 0)
        return self._path_score(emissions, tags, mask, lengths) - self._log_partition(emissions, mask, lengths)

    def _path_score(self, emissions, tags, mask, lengths) -> torch.Tensor:
        B, L, _ = emissions.shape
        if L == 0:
            return emissions.new_zeros(B)
        m = mask.float()
        emit = emissions.gather(2, tags[..., None]).squeeze(-1)  # (B, L)
        score = self.start_transitions[tags[:, 0]] + (emit * m).sum(1)
        if L > 1:
            trans = self.transitions[tags[:, :-1], tags[:, 1:]]  # (B, L-1)
            score = score + (trans * m[:, 1:]).sum(1)
        last = tags.gather(1, (lengths - 1).clamp(min=0)[:, None]).squeeze(1)
        score = score + self.end_transitions[last]
        return torch.where(lengths > 0, score, torch.zeros_like(score))

    def _log_partition(self, emissions, mask, lengths) -> torch.Tensor:
        B, L, _ = emissions.shape
        if L == 0:
            return emissions.new_zeros(B)
        alpha = self.start_transitions[None, :] + emissions[:, 0]  # (B, N)
        for t in range(1, L):
            nxt = torch.logsumexp(alpha[:, :, None] + self.transitions[None] + emissions[:, t, None, :], dim=1)
            alpha = torch.where(mask[:, t, None].bool(), nxt, alpha)
        log_z = torch.logsumexp(alpha + self.end_transitions[None, :], dim=1)
        return torch.where(lengths > 0, log_z, torch.zeros_like(log_z))

    @torch.no_grad()
    def decode(self, emissions: torch.Tensor, mask: torch.Tensor) -> list[list[int]]:
        """Best tag path per row (Viterbi), each of the row's length."""
        emissions = emissions.float()
        lengths = self._lengths(mask)
        B, L, N = emissions.shape
        if L == 0:
            return [[] for _ in range(B)]
        score = self.start_transitions[None, :] + emissions[:, 0]  # (B, N)
        backpointers = []
        for t in range(1, L):
            cand = score[:, :, None] + self.transitions[None]  # (B, N_from, N_to)
            best, idx = cand.max(dim=1)  # (B, N)
            nxt = best + emissions[:, t]
            keep = mask[:, t, None].bool()
            score = torch.where(keep, nxt, score)
            backpointers.append(idx)
        score = score + self.end_transitions[None, :]
        paths = []
        for b in range(B):
            n = int(lengths[b])
            if n == 0:
                paths.append([])
                continue
            tag = int(score[b].argmax())
            path = [tag]
            for t in range(n - 1, 0, -1):
                tag = int(backpointers[t - 1][b, tag])
                path.append(tag)
            paths.append(path[::-1])
        return paths


def compact(values: torch.Tensor, keep: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Move the ``keep`` positions of each row to the front, in order: ``(B, T, ...) -> (B, L, ...)`` and a mask."""
    keep = keep.bool()
    order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)  # (B, T): kept positions first
    lengths = keep.sum(1)
    L = int(lengths.max()) if keep.numel() else 0
    order = order[:, :L]
    index = order.reshape(*order.shape, *([1] * (values.dim() - 2))).expand(-1, -1, *values.shape[2:])
    gathered = values.gather(1, index)
    mask = torch.arange(L, device=values.device)[None, :] < lengths[:, None]
    return gathered, mask


class NezhaCrfForTokenClassification(NezhaForTokenClassification):
    """NEZHA token classifier with a CRF over the labelled positions (the first piece of each word/character).

    Parameters are the plain token classifier's plus ``crf.*``, so a backbone folder loads with the CRF freshly
    initialised, and ``config.extra["use_crf"] = True`` tells loaders which class to build.
    """

    head_prefixes = ("classifier.", "crf.")

    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.crf = CRF(config.num_labels)
        self.config.extra["use_crf"] = True

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False,
                label_mask=None):
        """``labels``: ``(B, T)`` tag ids with -100 where nothing is labelled; ``label_mask`` defaults to
        ``labels != -100``. Loss: mean negative log-likelihood per sequence. Returns logits ``(B, T, N)``."""
        out = self.nezha(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))  # (B, T, N)
        loss = None
        if labels is not None:
            keep = labels != -100 if label_mask is None else label_mask.bool()
            emis, mask = compact(logits, keep)  # (B, L, N)
            tags, _ = compact(labels.clamp(min=0), keep)  # (B, L)
            loss = -self.crf.log_likelihood(emis, tags, mask).mean()
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)

    @torch.no_grad()
    def decode(self, logits: torch.Tensor, label_mask: torch.Tensor) -> list[list[int]]:
        """Best tag ids for the labelled positions of each row, in order."""
        emis, mask = compact(logits, label_mask)
        return self.crf.decode(emis, mask)


def argmax_decode(logits: torch.Tensor, label_mask: torch.Tensor) -> list[list[int]]:
    """Per-position argmax at the labelled positions (the decoder without a CRF)."""
    pred = logits.argmax(-1)
    return [pred[b][label_mask[b].bool()].tolist() for b in range(pred.size(0))]


def token_classifier_class(config: NezhaConfig) -> type[NezhaForTokenClassification]:
    """The class a fine-tuned token-classification folder was saved from."""
    return NezhaCrfForTokenClassification if config.extra.get("use_crf") else NezhaForTokenClassification


__all__ = ["CRF", "NezhaCrfForTokenClassification", "argmax_decode", "compact", "token_classifier_class"]
