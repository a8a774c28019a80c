"""A transformer language model that *subclasses* ``nn.Transformer``, with the interface of pytorch/examples
``word_language_model/model.py:TransformerModel``, written from scratch for gradscope's tests.

What it reproduces:

* the model **is** an ``nn.Transformer`` (``super().__init__(d_model=..., nhead=..., dim_feedforward=...,
  num_encoder_layers=...)``), but only its encoder is used: ``self.decoder`` is replaced by a ``Linear`` head, so
  ``nn.Transformer``'s ``forward(src, tgt)`` contract does not apply;
* ``forward(self, src, has_mask=True)`` takes one input, ``(T, B)`` token ids (sequence-first, ``batch_first`` is
  ``False``), and a *boolean* flag; a tensor passed as ``has_mask`` fails with "Boolean value of Tensor with more
  than one value is ambiguous";
* a positional-encoding module defined in the same file, needing ``d_model``;
* the output is log-probabilities of shape ``(T, B, ntoken)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F


class PositionalEncoding(nn.Module):
    """Adds fixed sine/cosine position signals to a ``(T, B, d_model)`` input, then dropout."""

    def __init__(self, d_model: int, dropout: float = 0.1, max_len: int = 5000) -> None:
        super().__init__()
        self.dropout = nn.Dropout(p=dropout)
        position = torch.arange(max_len, dtype=torch.float32).unsqueeze(1)
        frequency = torch.exp(torch.arange(0, d_model, 2, dtype=torch.float32) * (-math.log(10000.0) / d_model))
        table = torch.zeros(max_len, 1, d_model)
        table[:, 0, 0::2] = torch.sin(position * frequency)
        table[:, 0, 1::2] = torch.cos(position * frequency)
        self.table: torch.Tensor
        self.register_buffer("table", table)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.dropout(x + self.table[: x.size(0)])
        return y


class TransformerModel(nn.Transformer):
    """Embedding → positional encoding → ``nn.Transformer``'s encoder (causal mask) → linear head."""

    def __init__(self, ntoken: int, ninp: int, nhead: int, nhid: int, nlayers: int, dropout: float = 0.5) -> None:
        super().__init__(d_model=ninp, nhead=nhead, dim_feedforward=nhid, num_encoder_layers=nlayers)
        self.model_type = "Transformer"
        self.src_mask: torch.Tensor | None = None
        self.ninp = ninp
        self.pos_encoder = PositionalEncoding(ninp, dropout)
        self.input_emb = nn.Embedding(ntoken, ninp)
        self.decoder = nn.Linear(ninp, ntoken)  # replaces nn.Transformer's decoder stack
        nn.init.uniform_(self.input_emb.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    @staticmethod
    def _causal_mask(size: int) -> torch.Tensor:
        return torch.full((size, size), float("-inf")).triu(diagonal=1)

    def forward(self, src: torch.Tensor, has_mask: bool = True) -> torch.Tensor:  # type: ignore[override]
        if has_mask:
            if self.src_mask is None or self.src_mask.size(0) != len(src):
                self.src_mask = self._causal_mask(len(src)).to(src.device)
        else:
            self.src_mask = None
        x = self.pos_encoder(self.input_emb(src) * math.sqrt(self.ninp))
        x = self.encoder(x, mask=self.src_mask)
        return F.log_softmax(self.decoder(x), dim=-1)
