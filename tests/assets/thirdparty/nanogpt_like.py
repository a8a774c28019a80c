"""A small GPT with nanoGPT's interface (karpathy/nanoGPT ``model.py``), written from scratch for gradscope's tests.

What it reproduces, because that is what a first scan of the real file runs into:

* several ``nn.Module`` classes in one file — ``LayerNorm``, ``CausalSelfAttention``, ``MLP``, ``Block`` — and the
  top-level ``GPT`` that uses all of them, defined last;
* ``GPT.__init__(self, config: GPTConfig)`` taking a ``@dataclass`` config, not keyword arguments;
* ``forward(self, idx, targets=None)`` on ``(B, T)`` token ids returning ``(logits, loss)``; without targets only the
  last position's logits are computed (``(B, 1, vocab)``) and ``loss`` is ``None``;
* a tied ``lm_head`` (the token embedding's weight) and a ``print`` in ``__init__``.

The config's defaults are scaled down from GPT-2's so that a scan without flags stays quick; the field names and types
are nanoGPT's. The real ``GPT.__init__`` has no annotation on ``config``; ``tests/test_thirdparty.py`` also scans a
copy of this file with the annotation removed.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F


@dataclass
class GPTConfig:
    block_size: int = 64
    vocab_size: int = 512
    n_layer: int = 2
    n_head: int = 2
    n_embd: int = 32
    dropout: float = 0.0
    bias: bool = True


class LayerNorm(nn.Module):
    """Layer normalisation whose bias can be switched off (``nn.LayerNorm`` gained ``bias=`` only later)."""

    def __init__(self, ndim: int, bias: bool) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(ndim))
        self.bias = nn.Parameter(torch.zeros(ndim)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, self.weight.shape, self.weight, self.bias, 1e-5)


class CausalSelfAttention(nn.Module):
    """Multi-head self-attention with a causal mask; q, k and v come from one fused projection."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        if config.n_embd % config.n_head:
            raise ValueError("n_embd must be a multiple of n_head")
        self.n_head = config.n_head
        self.qkv = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)
        self.proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.p_drop = config.dropout
        self.out_drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape
        heads = self.qkv(x).view(batch, steps, 3, self.n_head, width // self.n_head)
        q, k, v = heads.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, heads, T, head_dim)
        dropout = self.p_drop if self.training else 0.0
        mixed = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
        y: torch.Tensor = self.out_drop(self.proj(mixed.transpose(1, 2).reshape(batch, steps, width)))
        return y


class MLP(nn.Module):
    """The position-wise feed-forward part of a block: widen 4×, GELU, project back."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.up = nn.Linear(config.n_embd, 4 * config.n_embd, bias=config.bias)
        self.act = nn.GELU()
        self.down = nn.Linear(4 * config.n_embd, config.n_embd, bias=config.bias)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y: torch.Tensor = self.drop(self.down(self.act(self.up(x))))
        return y


class Block(nn.Module):
    """Pre-norm transformer block: x + attn(ln(x)), then x + mlp(ln(x))."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.norm_attn = LayerNorm(config.n_embd, bias=config.bias)
        self.attn = CausalSelfAttention(config)
        self.norm_mlp = LayerNorm(config.n_embd, bias=config.bias)
        self.mlp = MLP(config)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm_attn(x))
        y: torch.Tensor = x + self.mlp(self.norm_mlp(x))
        return y


class GPT(nn.Module):
    """Token + position embeddings, ``n_layer`` blocks, a final norm and a head tied to the token embedding."""

    def __init__(self, config: GPTConfig) -> None:
        super().__init__()
        self.config = config
        self.transformer = nn.ModuleDict(
            {
                "wte": nn.Embedding(config.vocab_size, config.n_embd),
                "wpe": nn.Embedding(config.block_size, config.n_embd),
                "drop": nn.Dropout(config.dropout),
                "h": nn.ModuleList(Block(config) for _ in range(config.n_layer)),
                "ln_f": LayerNorm(config.n_embd, bias=config.bias),
            }
        )
        self.lm_head = nn.Linear(config.n_embd, config.vocab_size, bias=False)
        self.transformer["wte"].weight = self.lm_head.weight  # weight tying
        self.apply(self._init)
        for name, param in self.named_parameters():
            if name.endswith("proj.weight"):  # residual projections, scaled down with depth as in GPT-2
                nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        print(f"GPT: {sum(p.numel() for p in self.parameters()) / 1e6:.2f}M parameters")

    @staticmethod
    def _init(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        _, steps = idx.shape
        if steps > self.config.block_size:
            raise ValueError(f"sequence of length {steps} is longer than block_size {self.config.block_size}")
        positions = torch.arange(steps, device=idx.device)
        x = self.transformer["drop"](self.transformer["wte"](idx) + self.transformer["wpe"](positions))
        blocks: nn.ModuleList = self.transformer["h"]  # type: ignore[assignment]
        for block in blocks:
            x = block(x)
        x = self.transformer["ln_f"](x)
        if targets is None:
            return self.lm_head(x[:, -1:, :]), None  # generation only needs the last position
        logits = self.lm_head(x)
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=-1)
        return logits, loss
