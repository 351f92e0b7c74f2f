"""The demo models' classes, at module level so that ``torch.save(model)`` and worker processes can import them.

Imported only when a demo transformer is built (it imports torch).
"""

from __future__ import annotations

import torch
from torch import nn


class DemoTransformer(nn.Module):
    """A small causal language model whose output head shares the embedding weights."""

    def __init__(self, vocab: int, d_model: int, layers: int, heads: int, max_len: int, tie: bool) -> None:
        super().__init__()
        self.embed = nn.Embedding(vocab, d_model)
        self.position = nn.Embedding(max_len, d_model)
        block = nn.TransformerEncoderLayer(d_model, heads, 4 * d_model, dropout=0.0, batch_first=True)
        self.encoder = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.head = nn.Linear(d_model, vocab, bias=False)
        if tie:
            self.head.weight = self.embed.weight

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(tokens.shape[-1], device=tokens.device)
        hidden = self.embed(tokens) + self.position(positions)
        mask = nn.Transformer.generate_square_subsequent_mask(tokens.shape[-1], device=tokens.device)
        logits: torch.Tensor = self.head(self.encoder(hidden, mask=mask, is_causal=True))
        return logits


__all__ = ["DemoTransformer"]
