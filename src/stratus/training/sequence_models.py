"""The ``rnn`` and ``transformer`` networks (training child only).

Every network here is exact under padding: a sequence's outputs do not depend on how many padded steps follow
it, so a text served alone (its batch padded to its own length) gets the prediction it got inside the
evaluation's batch (padded to the longest test text), and a ragged numeric batch padded with NaN steps gives each
sequence its own result. How:

- the forward recurrence runs left to right, so padded steps (which come last) never reach a real step;
- the backward direction of a bidirectional rnn is a second forward recurrence over each sequence reversed
  within its own length (padding stays at the end), its outputs put back in order by the same permutation;
  torch's own bidirectional mode would start the backward pass in the padding;
- attention adds -1e9 to padded keys, which softmax turns into exactly zero weight;
- pooling (mean and max over time) reads real steps only.

The head pools the encoder's outputs together with its inputs (a skip past the encoder): with a few thousand
examples the word vectors alone carry much of the signal, and the skip keeps it whatever the encoder learns.

ONNX export keeps the sequence length dynamic: positions and the reversal come from cumulative sums of the mask,
not from a Python loop over the length, and learned positions beyond the trained length reuse the last one.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from stratus.training.params import TrainParams
from stratus.types import Array

#: Added to the attention score of a padded key; exp() of it is exactly 0 in float32.
_MASKED = -1e9
#: What max pooling sees at padded steps: far below any real activation, and finite (an all-padding row stays finite).
_FLOOR = -1e4


def _reverse_within(x: torch.Tensor, lengths: torch.Tensor, steps: torch.Tensor) -> torch.Tensor:
    """x [batch, time, dim] with each row's first ``lengths`` steps reversed; padded steps stay where they are."""
    index = torch.where(steps < lengths.unsqueeze(1), lengths.unsqueeze(1) - 1 - steps, steps)
    return torch.gather(x, 1, index.unsqueeze(-1).expand_as(x))


def _pool(h: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and max over the real steps of h [batch, time, dim]: [batch, 2 * dim]."""
    weights = mask.unsqueeze(-1).to(h.dtype)
    mean = (h * weights).sum(1) / weights.sum(1).clamp(min=1.0)
    peak = torch.where(mask.unsqueeze(-1), h, torch.full_like(h, _FLOOR)).max(dim=1).values
    return torch.cat([mean, peak], dim=1)


def _steps(mask: torch.Tensor) -> torch.Tensor:
    """0, 1, 2, ... along time, shaped like mask: from a cumulative sum, so the exported length stays dynamic."""
    return torch.ones_like(mask, dtype=torch.long).cumsum(1) - 1


class Recurrent(nn.Module):
    """An LSTM or GRU over [batch, time, width]; bidirectional as two forward stacks (see the module's docstring)."""

    def __init__(self, width: int, params: TrainParams) -> None:
        super().__init__()
        kind = nn.LSTM if params.rnn_cell == "lstm" else nn.GRU
        dropout = params.dropout if params.num_layers > 1 else 0.0
        self.forward_rnn = kind(width, params.hidden_size, params.num_layers, batch_first=True, dropout=dropout)
        self.backward_rnn = (
            kind(width, params.hidden_size, params.num_layers, batch_first=True, dropout=dropout)
            if params.bidirectional
            else None
        )
        self.width = params.hidden_size * (2 if params.bidirectional else 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        out = self.forward_rnn(x)[0]
        if self.backward_rnn is None:
            return out  # type: ignore[no-any-return]
        lengths, steps = mask.to(torch.long).sum(1), _steps(mask)
        back = self.backward_rnn(_reverse_within(x, lengths, steps))[0]
        return torch.cat([out, _reverse_within(back, lengths, steps)], dim=-1)


class EncoderLayer(nn.Module):
    """A pre-norm Transformer encoder layer, written out (not nn.TransformerEncoderLayer, whose fused inference path
    does not export with a dynamic length) so the graph is plain MatMul, Softmax and LayerNormalization."""

    def __init__(self, dim: int, heads: int, feed_forward: int, dropout: float) -> None:
        super().__init__()
        self.heads, self.head_dim = heads, dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.project = nn.Linear(dim, dim)
        self.norm_attention, self.norm_ff = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, feed_forward), nn.GELU(), nn.Linear(feed_forward, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        batch, time, dim = x.shape
        q, k, v = self.qkv(self.norm_attention(x)).chunk(3, dim=-1)
        q, k, v = (t.reshape(batch, time, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        scores = q @ k.transpose(-1, -2) / float(np.sqrt(self.head_dim)) + bias
        attended = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, time, dim)
        x = x + self.drop(self.project(attended))
        return x + self.drop(self.ff(self.norm_ff(x)))  # type: ignore[no-any-return]


class Transformer(nn.Module):
    """Learned positions added to the inputs, then encoder layers; padded keys masked out."""

    def __init__(self, dim: int, positions: int, params: TrainParams) -> None:
        super().__init__()
        self.positions = nn.Embedding(positions, dim)
        # Small, as BERT starts them: at nn.Embedding's N(0, 1) the positions drown the word vectors at first.
        nn.init.normal_(self.positions.weight, std=0.02)
        self.last_position = positions - 1
        self.layers = nn.ModuleList(
            EncoderLayer(dim, params.heads, params.hidden_size, params.dropout) for _ in range(params.num_layers)
        )
        self.norm = nn.LayerNorm(dim)
        self.width = dim

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.positions(_steps(mask).clamp(max=self.last_position))
        bias = torch.where(mask, torch.zeros_like(mask, dtype=x.dtype), torch.full_like(mask, _MASKED, dtype=x.dtype))
        bias = bias[:, None, None, :]
        for layer in self.layers:
            x = layer(x, bias)
        return self.norm(x)  # type: ignore[no-any-return]


def encoder(model: str, width: int, positions: int, params: TrainParams) -> nn.Module:
    """The sequence encoder of a trainer: [batch, time, width] and its mask -> [batch, time, encoder.width]."""
    if model == "rnn":
        return Recurrent(width, params)
    return Transformer(width, positions, params)


def encoder_width(module: nn.Module) -> int:
    width = module.width
    assert isinstance(width, int)
    return width


class Head(nn.Module):
    """Pooled encoder outputs -> class logits and label, or one regression value."""

    def __init__(self, width: int, outputs: int, classify: bool, dropout: float) -> None:
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(2 * width, outputs)
        self.classify = classify

    def forward(self, h: torch.Tensor, mask: torch.Tensor) -> Any:
        out = self.linear(self.drop(_pool(h, mask)))
        if self.classify:
            return out, out.argmax(dim=1)
        return out.squeeze(-1)


class TextSequenceModel(nn.Module):
    """Token ids and attention mask (what the pipeline's tokenize step gives) -> logits, label."""

    def __init__(self, model: str, vocab: int, classes: int, params: TrainParams) -> None:
        super().__init__()
        self.embedding = nn.Embedding(vocab, params.embedding_dim, padding_idx=0)
        self.drop = nn.Dropout(params.dropout)
        self.encoder = encoder(model, params.embedding_dim, params.max_length, params)
        self.head = Head(encoder_width(self.encoder) + params.embedding_dim, classes, True, params.dropout)

    def forward(self, ids: torch.Tensor, attention: torch.Tensor) -> Any:
        mask = attention > 0
        x = self.drop(self.embedding(ids))
        return self.head(torch.cat([self.encoder(x, mask), x], dim=-1), mask)


class NumericSequenceModel(nn.Module):
    """[batch, time, features] FP32, padding as all-NaN time steps -> logits, label (or a prediction). The
    per-feature standardisation fitted on the training steps is inside, so clients send raw values."""

    offset: torch.Tensor
    scale: torch.Tensor

    def __init__(
        self, model: str, features: int, positions: int, outputs: int, classify: bool, params: TrainParams
    ) -> None:
        super().__init__()
        self.register_buffer("offset", torch.zeros(features))
        self.register_buffer("scale", torch.ones(features))
        # The transformer works in embedding_dim; the rnn reads the (standardised) features directly.
        self.project = nn.Linear(features, params.embedding_dim) if model == "transformer" else nn.Identity()
        width = params.embedding_dim if model == "transformer" else features
        self.encoder = encoder(model, width, positions, params)
        self.head = Head(encoder_width(self.encoder) + width, outputs, classify, params.dropout)

    def fit_scaling(self, x: Array) -> None:
        steps = x.reshape(-1, x.shape[-1])
        steps = steps[~np.isnan(steps).all(axis=1)]
        std = steps.std(axis=0)
        self.offset.copy_(torch.from_numpy(steps.mean(axis=0).astype(np.float32)))
        self.scale.copy_(torch.from_numpy(np.where(std > 1e-12, std, 1.0).astype(np.float32)))

    def forward(self, x: torch.Tensor) -> Any:
        missing = torch.isnan(x)
        mask = ~missing.all(dim=-1)
        x = (torch.where(missing, self.offset, x) - self.offset) / self.scale
        x = self.project(torch.where(mask.unsqueeze(-1), x, torch.zeros_like(x)))
        return self.head(torch.cat([self.encoder(x, mask), x], dim=-1), mask)
