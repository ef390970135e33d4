"""The NEZHA encoder and its task heads, top-down: embeddings -> attention -> layer -> encoder -> heads.

Shape legend: ``B`` batch, ``T`` sequence length, ``E`` hidden size, ``H`` heads, ``D`` head size,
``V`` vocabulary, ``N`` labels, ``M`` masked positions per sequence.

Module and parameter names follow transformers 4.x ``modeling_nezha`` (``nezha.encoder.layer.0.attention.self.query``,
``LayerNorm`` capitalised as in the TensorFlow variable names) so that state dicts move between the two libraries
and the TF converter maps names one to one.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from nezha.model.attention_backends import relative_attention
from nezha.model.config import NezhaConfig
from nezha.model.positions import relative_position_table

_ACTIVATIONS = {
    "gelu": F.gelu,  # exact erf form, as transformers' "gelu"
    "gelu_new": lambda x: F.gelu(x, approximate="tanh"),  # the tanh form used by the original TF code
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "relu": F.relu,
    "tanh": torch.tanh,
    "silu": F.silu,
    "swish": F.silu,
}


# ---------------------------------------------------------------------------------------------------- outputs
class ModelOutput:
    """Gives the output dataclasses transformers' ``ModelOutput`` access, so code ported from transformers runs.

    As there, only fields that are not None count, in declaration order (``loss`` first when present):
    ``out["logits"]``, ``out[0]``, ``out[:2]``, ``to_tuple()``, ``keys()``, ``"loss" in out``; iterating yields
    the keys, as for a dict. Fields are declared in transformers' order, so positions agree with its classes.
    """

    def keys(self) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None]

    def values(self) -> list:
        return [getattr(self, k) for k in self.keys()]

    def items(self) -> list[tuple[str, object]]:
        return [(k, getattr(self, k)) for k in self.keys()]

    def to_tuple(self) -> tuple:
        return tuple(self.values())

    def __getitem__(self, key: str | int | slice):
        if isinstance(key, str):
            if key not in self.keys():
                raise KeyError(key)
            return getattr(self, key)
        return self.to_tuple()[key]

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __iter__(self):
        return iter(self.keys())

    def __len__(self) -> int:
        return len(self.keys())


@dataclass(kw_only=True)
class NezhaModelOutput(ModelOutput):
    last_hidden_state: torch.Tensor  # (B, T, E)
    pooler_output: torch.Tensor | None = None  # (B, E)
    hidden_states: tuple[torch.Tensor, ...] | None = None  # embeddings + each layer, when asked for


@dataclass(kw_only=True)
class NezhaForPreTrainingOutput(ModelOutput):
    loss: torch.Tensor | None = None
    prediction_logits: torch.Tensor  # (B, T, V), or (B, M, V) when masked positions are given
    seq_relationship_logits: torch.Tensor  # (B, 2)
    hidden_states: tuple[torch.Tensor, ...] | None = None
    # Not in transformers: last, so that the positions above match its NezhaForPreTrainingOutput.
    mlm_loss: torch.Tensor | None = None
    nsp_loss: torch.Tensor | None = None


@dataclass(kw_only=True)
class MaskedLMOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor  # (B, T, V)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass(kw_only=True)
class SequenceClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor  # (B, N)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass(kw_only=True)
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor  # (B, T, N)
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass(kw_only=True)
class QuestionAnsweringOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor  # (B, T)
    end_logits: torch.Tensor  # (B, T)
    hidden_states: tuple[torch.Tensor, ...] | None = None


# ---------------------------------------------------------------------------------------------------- encoder
class NezhaEmbeddings(nn.Module):
    """Word + token-type embeddings, LayerNorm, dropout. NEZHA has no absolute position embeddings."""

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size, padding_idx=config.pad_token_id)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor) -> torch.Tensor:
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)  # (B, T, E)
        return self.dropout(self.LayerNorm(x))


class NezhaSelfAttention(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.max_relative_position = config.max_relative_position
        self.dropout_p = config.attention_probs_dropout_prob
        self.backend = config.attention_backend
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, table: torch.Tensor) -> torch.Tensor:
        B, T, E = x.shape
        q, k, v = (
            proj(x).view(B, T, self.num_heads, self.head_dim).transpose(1, 2)  # (B, H, T, D)
            for proj in (self.query, self.key, self.value)
        )
        ctx = relative_attention(
            q, k, v, table, mask,
            max_relative_position=self.max_relative_position,
            dropout_p=self.dropout_p if self.training else 0.0,
            backend=self.backend,
        )  # (B, H, T, D)
        return ctx.transpose(1, 2).reshape(B, T, E)


class NezhaSelfOutput(nn.Module):
    """Dense, dropout, residual add, LayerNorm: closes both the attention and the feed-forward block."""

    def __init__(self, config: NezhaConfig, in_features: int | None = None):
        super().__init__()
        self.dense = nn.Linear(in_features or config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)
        self.dropout = nn.Dropout(config.hidden_dropout_prob)

    def forward(self, x: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dropout(self.dense(x)) + residual)


class NezhaAttention(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.self = NezhaSelfAttention(config)
        self.output = NezhaSelfOutput(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, table: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, mask, table), x)


class NezhaIntermediate(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.intermediate_size)
        self.act = _ACTIVATIONS[config.hidden_act]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.dense(x))


class NezhaLayer(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.attention = NezhaAttention(config)
        self.intermediate = NezhaIntermediate(config)
        self.output = NezhaSelfOutput(config, in_features=config.intermediate_size)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, table: torch.Tensor) -> torch.Tensor:
        x = self.attention(x, mask, table)
        return self.output(self.intermediate(x), x)


class NezhaEncoder(nn.Module):
    """The layer stack. Owns the one relative-position table that every layer shares."""

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.layer = nn.ModuleList(NezhaLayer(config) for _ in range(config.num_hidden_layers))
        # Not persistent: it is a fixed function of (K, D), never learned, and absent from released checkpoints.
        self.register_buffer(
            "relative_table", relative_position_table(config.max_relative_position, config.head_dim), persistent=False
        )
        self.gradient_checkpointing = False

    def forward(
        self, x: torch.Tensor, mask: torch.Tensor | None, output_hidden_states: bool = False
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...] | None]:
        states = [x] if output_hidden_states else None
        for layer in self.layer:
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x = checkpoint(layer, x, mask, self.relative_table, use_reentrant=False)
            else:
                x = layer(x, mask, self.relative_table)
            if states is not None:
                states.append(x)
        return x, tuple(states) if states is not None else None


class NezhaPooler(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(x[:, 0]))  # (B, E) from the [CLS] position


# ---------------------------------------------------------------------------------------------------- base class
class NezhaPreTrainedModel(nn.Module):
    """Weight init, input checks, and ``save_pretrained``/``from_pretrained`` for every NEZHA model."""

    base_model_prefix = "nezha"
    # Parameter name prefixes of task heads: absent from a backbone checkpoint, so initialised fresh and reported.
    head_prefixes: tuple[str, ...] = ()

    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.config = config

    def init_weights(self) -> None:
        """BERT initialisation: N(0, initializer_range) weights, zero biases, unit LayerNorm, zero padding row.

        A task model initialises only its head: its ``nezha`` encoder initialised itself when built. The MLM
        decoder shares the word-embedding matrix, so it is skipped too (re-drawing it would undo the zero padding row).
        """
        std = self.config.initializer_range
        encoder = getattr(self, "nezha", None)
        done = set(encoder.modules()) if encoder is not None else set()
        done_params = {id(p) for m in done for p in m.parameters(recurse=False)}
        for module in self.modules():
            if module in done or (isinstance(module, nn.Linear) and id(module.weight) in done_params):
                continue
            if isinstance(module, nn.Linear):
                nn.init.normal_(module.weight, 0.0, std)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.Embedding):
                nn.init.normal_(module.weight, 0.0, std)
                if module.padding_idx is not None:
                    with torch.no_grad():
                        module.weight[module.padding_idx].zero_()
            elif isinstance(module, nn.LayerNorm):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        for name, param in self.named_parameters():
            if name.endswith("predictions.bias"):
                nn.init.zeros_(param)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def save_pretrained(self, directory: str | os.PathLike, tokenizer_vocab: str | os.PathLike | None = None) -> None:
        from nezha.model.pretrained import save_pretrained

        save_pretrained(self, directory, tokenizer_vocab)

    @classmethod
    def from_pretrained(cls, directory: str | os.PathLike, **config_overrides):
        """Load a folder with ``config.json`` and ``model.safetensors`` or ``pytorch_model.bin``.

        ``config_overrides`` (e.g. ``num_labels=3``) change the config before the model is built.
        """
        from nezha.model.pretrained import load_pretrained

        return load_pretrained(cls, Path(directory), **config_overrides)


def _check_inputs(
    config: NezhaConfig,
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor | None,
    token_type_ids: torch.Tensor | None,
) -> None:
    """Turn silent wrong answers and deep index errors into a ValueError that says what is wrong.

    Shapes and dtypes are always checked. Value ranges are read only from CPU tensors in eager mode: reading them
    from a GPU tensor would stall the device on every forward, and inside ``torch.compile`` it would break the
    graph (the data pipelines check token ids on the host before batches reach the device). Skipped while a graph is
    exported: an exported graph cannot read tensor values.
    """
    if torch.compiler.is_exporting() or torch.jit.is_tracing():
        return
    if input_ids.dim() != 2:
        raise ValueError(f"input_ids must be (batch, seq_len), got shape {tuple(input_ids.shape)}")
    if input_ids.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"input_ids must be an integer tensor, got {input_ids.dtype}")
    values = input_ids.device.type == "cpu" and not torch.compiler.is_compiling()
    if values and input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= config.vocab_size):
        raise ValueError(
            f"input_ids must be in [0, {config.vocab_size}) (the config's vocab_size), got values in "
            f"[{int(input_ids.min())}, {int(input_ids.max())}]: is the vocab.txt the one this model was trained with?"
        )
    for name, t in (("attention_mask", attention_mask), ("token_type_ids", token_type_ids)):
        if t is not None and t.shape != input_ids.shape:
            raise ValueError(f"{name} must have the shape of input_ids {tuple(input_ids.shape)}, got {tuple(t.shape)}")
    if values and token_type_ids is not None and token_type_ids.numel():
        if int(token_type_ids.min()) < 0 or int(token_type_ids.max()) >= config.type_vocab_size:
            raise ValueError(
                f"token_type_ids must be in [0, {config.type_vocab_size}), got max {int(token_type_ids.max())}"
            )


class NezhaModel(NezhaPreTrainedModel):
    """The NEZHA encoder with an optional pooler. State-dict keys match transformers' ``NezhaModel``."""

    def __init__(self, config: NezhaConfig, add_pooling_layer: bool = True):
        super().__init__(config)
        self.embeddings = NezhaEmbeddings(config)
        self.encoder = NezhaEncoder(config)
        self.pooler = NezhaPooler(config) if add_pooling_layer else None
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> NezhaModelOutput:
        """Encode a batch.

        Args:
            input_ids: ``(B, T)`` token ids, any length (no 512 cap).
            attention_mask: ``(B, T)``, 1 for real tokens and 0 for padding; all ones when None.
            token_type_ids: ``(B, T)`` segment ids; zeros when None.
            output_hidden_states: also return the embeddings and every layer's output.

        Returns:
            ``NezhaModelOutput`` with ``last_hidden_state (B, T, E)`` and ``pooler_output (B, E)``.
        """
        _check_inputs(self.config, input_ids, attention_mask, token_type_ids)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, E)
        mask = None
        if attention_mask is not None:
            # Additive mask as in BERT: 0 where attended, the dtype's minimum where padded.
            mask = (1.0 - attention_mask[:, None, None, :].float()) * torch.finfo(torch.float32).min  # (B, 1, 1, T)
        x, states = self.encoder(x, mask, output_hidden_states)
        pooled = self.pooler(x) if self.pooler is not None else None
        return NezhaModelOutput(last_hidden_state=x, pooler_output=pooled, hidden_states=states)


# ---------------------------------------------------------------------------------------------------- heads
class NezhaPredictionHeadTransform(nn.Module):
    def __init__(self, config: NezhaConfig):
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.act = _ACTIVATIONS[config.hidden_act]
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.act(self.dense(x)))


class NezhaLMPredictionHead(nn.Module):
    """MLM head; ``decoder.weight`` is tied to the word embeddings, with its own output bias."""

    def __init__(self, config: NezhaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.transform = NezhaPredictionHeadTransform(config)
        self.decoder = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.decoder.weight = word_embeddings.weight
        self.bias = nn.Parameter(torch.zeros(config.vocab_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(self.transform(x), self.decoder.weight, self.bias)  # (.., V)


class NezhaPreTrainingHeads(nn.Module):
    def __init__(self, config: NezhaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = NezhaLMPredictionHead(config, word_embeddings)
        self.seq_relationship = nn.Linear(config.hidden_size, 2)


class NezhaOnlyMLMHead(nn.Module):
    def __init__(self, config: NezhaConfig, word_embeddings: nn.Embedding):
        super().__init__()
        self.predictions = NezhaLMPredictionHead(config, word_embeddings)


class NezhaForPreTraining(NezhaPreTrainedModel):
    """Masked LM + next sentence prediction, the NEZHA pretraining objective."""

    head_prefixes = ("cls.",)

    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.nezha = NezhaModel(config)
        self.cls = NezhaPreTrainingHeads(config, self.nezha.embeddings.word_embeddings)
        self.init_weights()

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        next_sentence_label: torch.Tensor | None = None,
        masked_positions: torch.Tensor | None = None,
        output_hidden_states: bool = False,
    ) -> NezhaForPreTrainingOutput:
        """Args:
            input_ids, attention_mask, token_type_ids: as in :class:`NezhaModel`.
            labels: ``(B, T)`` MLM targets with -100 where nothing is predicted; or ``(B, M)`` aligned with
                ``masked_positions``.
            next_sentence_label: ``(B,)``, 0 when B follows A, 1 when B is random.
            masked_positions: ``(B, M)`` positions to predict; the vocabulary projection then runs on ``M``
                positions instead of ``T`` (the original TF pretraining does the same gather).

        Returns:
            ``NezhaForPreTrainingOutput``; ``loss = mlm_loss + nsp_loss`` when both label sets are given.
        """
        out = self.nezha(input_ids, attention_mask, token_type_ids, output_hidden_states)
        seq = out.last_hidden_state  # (B, T, E)
        if masked_positions is not None:
            seq = torch.gather(seq, 1, masked_positions.unsqueeze(-1).expand(-1, -1, seq.size(-1)))  # (B, M, E)
        logits = self.cls.predictions(seq)
        nsp_logits = self.cls.seq_relationship(out.pooler_output)  # (B, 2)
        mlm_loss = nsp_loss = loss = None
        if labels is not None:
            mlm_loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1))
        if next_sentence_label is not None:
            nsp_loss = F.cross_entropy(nsp_logits.float(), next_sentence_label.reshape(-1))
        if mlm_loss is not None and nsp_loss is not None:
            loss = mlm_loss + nsp_loss
        return NezhaForPreTrainingOutput(
            loss=loss, prediction_logits=logits, seq_relationship_logits=nsp_logits, hidden_states=out.hidden_states,
            mlm_loss=mlm_loss, nsp_loss=nsp_loss,
        )


class NezhaForMaskedLM(NezhaPreTrainedModel):
    head_prefixes = ("cls.",)

    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.nezha = NezhaModel(config, add_pooling_layer=False)
        self.cls = NezhaOnlyMLMHead(config, self.nezha.embeddings.word_embeddings)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False):
        """``labels``: ``(B, T)`` with -100 where nothing is predicted. Returns logits ``(B, T, V)``."""
        out = self.nezha(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.cls.predictions(out.last_hidden_state)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), labels.reshape(-1))
        return MaskedLMOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


def _classifier_dropout(config: NezhaConfig) -> float:
    return config.hidden_dropout_prob if config.classifier_dropout is None else config.classifier_dropout


class NezhaForSequenceClassification(NezhaPreTrainedModel):
    """[CLS] pooled output -> dropout -> linear. One label: regression (MSE); several: cross-entropy."""

    head_prefixes = ("classifier.",)

    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.nezha = NezhaModel(config)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False):
        """``labels``: ``(B,)`` class ids (float targets when ``num_labels == 1``). Returns logits ``(B, N)``."""
        out = self.nezha(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.pooler_output))
        loss = None
        if labels is not None:
            if self.num_labels == 1:
                loss = F.mse_loss(logits.squeeze(-1).float(), labels.float())
            else:
                loss = F.cross_entropy(logits.float(), labels.reshape(-1))
        return SequenceClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class NezhaForTokenClassification(NezhaPreTrainedModel):
    """Per-token dropout -> linear (e.g. BIO tags for NER). Labels of -100 are ignored in the loss."""

    head_prefixes = ("classifier.",)

    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.num_labels = config.num_labels
        self.nezha = NezhaModel(config, add_pooling_layer=False)
        self.dropout = nn.Dropout(_classifier_dropout(config))
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.init_weights()

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, labels=None, output_hidden_states=False):
        """``labels``: ``(B, T)`` tag ids, -100 to ignore. Returns logits ``(B, T, N)``."""
        out = self.nezha(input_ids, attention_mask, token_type_ids, output_hidden_states)
        logits = self.classifier(self.dropout(out.last_hidden_state))
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits.reshape(-1, self.num_labels).float(), labels.reshape(-1))
        return TokenClassifierOutput(loss=loss, logits=logits, hidden_states=out.hidden_states)


class NezhaForQuestionAnswering(NezhaPreTrainedModel):
    """Span extraction (SQuAD / CMRC 2018): start and end logits per token."""

    head_prefixes = ("qa_outputs.",)

    def __init__(self, config: NezhaConfig):
        super().__init__(config)
        self.nezha = NezhaModel(config, add_pooling_layer=False)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.init_weights()

    def forward(
        self,
        input_ids,
        attention_mask=None,
        token_type_ids=None,
        start_positions=None,
        end_positions=None,
        output_hidden_states=False,
    ):
        """``start_positions``/``end_positions``: ``(B,)`` token indices (0, the [CLS], for no answer in window)."""
        out = self.nezha(input_ids, attention_mask, token_type_ids, output_hidden_states)
        start_logits, end_logits = self.qa_outputs(out.last_hidden_state).float().unbind(-1)  # (B, T) each
        loss = None
        if start_positions is not None and end_positions is not None:
            # Positions outside the window are clamped to T and ignored, as in the reference implementations.
            T = start_logits.size(1)
            start_positions = start_positions.reshape(-1).clamp(0, T)
            end_positions = end_positions.reshape(-1).clamp(0, T)
            loss = (
                F.cross_entropy(start_logits, start_positions, ignore_index=T)
                + F.cross_entropy(end_logits, end_positions, ignore_index=T)
            ) / 2
        return QuestionAnsweringOutput(
            loss=loss, start_logits=start_logits, end_logits=end_logits, hidden_states=out.hidden_states
        )


MODEL_CLASSES = {
    "base": NezhaModel,
    "pretraining": NezhaForPreTraining,
    "masked_lm": NezhaForMaskedLM,
    "sequence_classification": NezhaForSequenceClassification,
    "token_classification": NezhaForTokenClassification,
    "question_answering": NezhaForQuestionAnswering,
}
