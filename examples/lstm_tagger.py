"""A sequence tagger: token ids -> Embedding -> LSTM -> Linear, returning ``(logits, (h, c))``.

Shows two things the scan handles without help: token-id inputs inferred from the first layer (an Embedding,
so ids in its vocabulary of shape (batch, 32)) and a tuple output, of which the default loss uses the first
tensor, the per-token logits. The LSTM's gates keep this shallow recurrent net healthy. Scan it:

    gradscope scan examples/lstm_tagger.py
"""

from __future__ import annotations

from torch import Tensor, nn


class LSTMTagger(nn.Module):
    def __init__(self, vocab: int, embed_dim: int, hidden: int, num_tags: int, num_layers: int) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, embed_dim)
        self.lstm = nn.LSTM(embed_dim, hidden, num_layers=num_layers, batch_first=True)
        self.tag = nn.Linear(hidden, num_tags)

    def forward(self, ids: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        out, state = self.lstm(self.embed(ids))
        return self.tag(out), state


def build_model(
    vocab: int = 100, embed_dim: int = 32, hidden: int = 64, num_tags: int = 10, num_layers: int = 1
) -> nn.Module:
    return LSTMTagger(vocab, embed_dim, hidden, num_tags, num_layers)
