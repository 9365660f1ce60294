"""The PyTorch network behind the MLP family (imported only when that family is used)."""
from __future__ import annotations

import torch
from torch import nn


class EmbeddingMLP(nn.Module):
    """Numeric inputs plus one embedding per categorical column, then a ReLU MLP."""

    def __init__(self, n_numeric: int, cardinalities: list[int], embedding_dim: int, hidden: tuple[int, ...],
                 n_out: int):
        super().__init__()
        self.embeddings = nn.ModuleList(nn.Embedding(k, min(embedding_dim, k)) for k in cardinalities)
        width = n_numeric + sum(e.embedding_dim for e in self.embeddings)
        layers: list[nn.Module] = []
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()]
            width = h
        layers.append(nn.Linear(width, n_out))
        self.mlp = nn.Sequential(*layers)

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        parts = [x_num] + [emb(x_cat[:, i]) for i, emb in enumerate(self.embeddings)]
        return self.mlp(torch.cat(parts, dim=1))
