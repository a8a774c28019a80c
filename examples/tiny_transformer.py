"""A tiny pre-LN transformer language model, with the optional probe conventions spelled out.

Besides ``build_model()``, this file defines the two optional functions gradscope looks for:

- ``example_inputs()`` returns one batch (here a tensor of token ids); the scan feeds it to the model.
- ``loss_fn(output, batch)`` returns the scalar loss to backpropagate (here next-token cross-entropy) instead
  of the default loss.

Scan it:

    gradscope scan examples/tiny_transformer.py
    gradscope scan examples/tiny_transformer.py --model-kwargs '{"n_layers": 6}'
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

VOCAB = 100
SEQ_LEN = 32


class Block(nn.Module):
    """Pre-LN: x + attn(ln(x)), then x + mlp(ln(x)); the residual stream itself is never normalised."""

    def __init__(self, d_model: int, n_heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(d_model)
        self.attn = nn.MultiheadAttention(d_model, n_heads, batch_first=True)
        self.ln2 = nn.LayerNorm(d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, 4 * d_model), nn.GELU(), nn.Linear(4 * d_model, d_model))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        h = self.ln1(x)
        x = x + self.attn(h, h, h, attn_mask=mask, need_weights=False)[0]
        y: Tensor = x + self.mlp(self.ln2(x))
        return y


class TinyLM(nn.Module):
    def __init__(self, vocab: int, d_model: int, n_heads: int, n_layers: int, max_len: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, d_model)
        self.pos = nn.Embedding(max_len, d_model)
        self.blocks = nn.ModuleList([Block(d_model, n_heads) for _ in range(n_layers)])
        self.ln_f = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, vocab)
        nn.init.normal_(self.tok.weight, std=0.02)
        nn.init.normal_(self.pos.weight, std=0.02)

    def forward(self, ids: Tensor) -> Tensor:
        t = ids.shape[1]
        causal = torch.triu(torch.ones(t, t, dtype=torch.bool, device=ids.device), diagonal=1)
        x = self.tok(ids) + self.pos(torch.arange(t, device=ids.device))
        for block in self.blocks:
            x = block(x, causal)
        y: Tensor = self.head(self.ln_f(x))
        return y  # (batch, seq, vocab) logits


def build_model(d_model: int = 32, n_heads: int = 4, n_layers: int = 2) -> nn.Module:
    return TinyLM(VOCAB, d_model, n_heads, n_layers, max_len=SEQ_LEN)


def example_inputs() -> Tensor:
    """One batch of 8 sequences of token ids, deterministic."""
    g = torch.Generator().manual_seed(0)
    return torch.randint(0, VOCAB, (8, SEQ_LEN), generator=g)


def loss_fn(output: Tensor, batch: Tensor) -> Tensor:
    """Next-token cross-entropy: the logits at position t predict the token at t + 1."""
    logits = output[:, :-1].reshape(-1, output.shape[-1])
    targets = batch[:, 1:].reshape(-1).to(logits.device)
    return F.cross_entropy(logits, targets)
