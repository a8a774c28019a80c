"""A recurrent language model with the interface of pytorch/examples ``word_language_model/model.py:RNNModel``,
written from scratch for gradscope's tests.

What it reproduces:

* a constructor that needs five arguments, one of them a string choosing the cell
  (``RNNModel(rnn_type, ntoken, ninp, nhid, nlayers, dropout=0.5, tie_weights=False)``);
* **sequence-first** inputs: ``forward(self, input, hidden)`` takes ``(T, B)`` token ids, and the recurrent layer is
  built with ``batch_first=False``; dimension 0 of the input is time, not the batch;
* ``hidden`` is a *required* positional argument. Like the original, this file has no code of its own for
  ``None``: it hands ``hidden`` straight to ``nn.LSTM``/``nn.GRU``/``nn.RNN``, which start from zeros when given
  ``None``. Training code passes ``model.init_hidden(batch_size)``;
* the output is ``(log_probs, hidden)`` with ``log_probs`` flattened to ``(T * B, ntoken)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

Hidden = torch.Tensor | tuple[torch.Tensor, torch.Tensor]

_CELLS = {
    "LSTM": (nn.LSTM, {}),
    "GRU": (nn.GRU, {}),
    "RNN_TANH": (nn.RNN, {"nonlinearity": "tanh"}),
    "RNN_RELU": (nn.RNN, {"nonlinearity": "relu"}),
}


class RNNModel(nn.Module):
    """Embedding → dropout → stacked recurrent layer → dropout → linear decoder, optionally tied to the embedding."""

    def __init__(
        self,
        rnn_type: str,
        ntoken: int,
        ninp: int,
        nhid: int,
        nlayers: int,
        dropout: float = 0.5,
        tie_weights: bool = False,
    ) -> None:
        super().__init__()
        if rnn_type not in _CELLS:
            raise ValueError(f"rnn_type must be one of {', '.join(_CELLS)}, got {rnn_type!r}")
        cell, extra = _CELLS[rnn_type]
        self.rnn_type, self.ntoken, self.nhid, self.nlayers = rnn_type, ntoken, nhid, nlayers
        self.drop = nn.Dropout(dropout)
        self.encoder = nn.Embedding(ntoken, ninp)
        self.rnn = cell(ninp, nhid, nlayers, dropout=dropout, **extra)  # batch_first=False: (T, B, features)
        self.decoder = nn.Linear(nhid, ntoken)
        if tie_weights:
            if nhid != ninp:
                raise ValueError("tie_weights needs nhid == ninp")
            self.decoder.weight = self.encoder.weight
        nn.init.uniform_(self.encoder.weight, -0.1, 0.1)
        nn.init.uniform_(self.decoder.weight, -0.1, 0.1)
        nn.init.zeros_(self.decoder.bias)

    def forward(self, input: torch.Tensor, hidden: Hidden) -> tuple[torch.Tensor, Hidden]:
        embedded = self.drop(self.encoder(input))
        output, hidden = self.rnn(embedded, hidden)
        decoded = self.decoder(self.drop(output))
        return F.log_softmax(decoded.view(-1, self.ntoken), dim=1), hidden

    def init_hidden(self, bsz: int) -> Hidden:
        """Zeros of the recurrent layer's state shape for a batch of ``bsz`` sequences."""
        weight = next(self.parameters())
        zeros = weight.new_zeros(self.nlayers, bsz, self.nhid)
        return (zeros, weight.new_zeros(self.nlayers, bsz, self.nhid)) if self.rnn_type == "LSTM" else zeros
