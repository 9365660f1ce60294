"""PyTorch MLP with categorical embeddings as sklearn estimators: seeded, deterministic on CPU, CUDA if present."""
from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, ClassifierMixin, RegressorMixin

from ml.features import MISSING


class _TorchMLP(BaseEstimator):
    def __init__(self, numeric=(), categorical=(), hidden=(64, 32), embedding_dim=8, epochs=8, batch_size=512,
                 lr=0.003, weight_decay=0.0, seed=0, device="auto"):
        self.numeric = numeric
        self.categorical = categorical
        self.hidden = hidden
        self.embedding_dim = embedding_dim
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.weight_decay = weight_decay
        self.seed = seed
        self.device = device

    # -- encoding -------------------------------------------------------------------------------------
    def _fit_encoding(self, X: pd.DataFrame) -> None:
        num = X[list(self.numeric)].to_numpy(dtype=np.float64)
        self.num_median_ = np.nan_to_num(np.nanmedian(num, axis=0)) if num.size else np.zeros(0)
        filled = np.where(np.isnan(num), self.num_median_, num)
        self.num_mean_ = filled.mean(axis=0) if num.size else np.zeros(0)
        self.num_scale_ = filled.std(axis=0) + 1e-9 if num.size else np.ones(0)
        # index 0 is reserved for unknown or missing categories
        self.vocab_ = [{v: i + 1 for i, v in enumerate(sorted(set(X[c]) - {MISSING}))} for c in self.categorical]

    def _encode(self, X: pd.DataFrame):
        num = X[list(self.numeric)].to_numpy(dtype=np.float64)
        num = np.where(np.isnan(num), self.num_median_, num)
        num = ((num - self.num_mean_) / self.num_scale_).astype(np.float32)
        cat = np.stack([X[c].map(v).fillna(0).to_numpy(dtype=np.int64)
                        for c, v in zip(self.categorical, self.vocab_, strict=True)],
                       axis=1) if self.categorical else np.zeros((len(X), 0), dtype=np.int64)
        return num, cat

    # -- training ---------------------------------------------------------------------------------------
    def _fit(self, X: pd.DataFrame, y: np.ndarray, n_out: int, loss_fn):
        import torch

        from ml.torch_net import EmbeddingMLP

        self._fit_encoding(X)
        num, cat = self._encode(X)
        dev = torch.device("cuda" if self.device == "auto" and torch.cuda.is_available() else
                           ("cpu" if self.device == "auto" else self.device))
        with torch.random.fork_rng(devices=[]):  # seed locally, leave the caller's RNG state alone
            torch.manual_seed(self.seed)
            net = EmbeddingMLP(num.shape[1], [len(v) + 1 for v in self.vocab_], self.embedding_dim,
                               tuple(self.hidden), n_out).to(dev)
            gen = torch.Generator().manual_seed(self.seed)
            opt = torch.optim.AdamW(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            xn, xc, yt = torch.from_numpy(num), torch.from_numpy(cat), torch.from_numpy(y)
            n = len(yt)
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=gen)
                for i in range(0, n, self.batch_size):
                    idx = order[i:i + self.batch_size]
                    opt.zero_grad()
                    out = net(xn[idx].to(dev), xc[idx].to(dev))
                    loss = loss_fn(out, yt[idx].to(dev))
                    loss.backward()
                    opt.step()
        self.net_ = net.cpu().eval()
        self.n_features_in_ = len(self.numeric) + len(self.categorical)
        return self

    def _forward(self, X: pd.DataFrame) -> np.ndarray:
        import torch

        num, cat = self._encode(X)
        outs = []
        with torch.no_grad():
            for i in range(0, len(num), 8192):
                outs.append(self.net_(torch.from_numpy(num[i:i + 8192]), torch.from_numpy(cat[i:i + 8192])).numpy())
        return np.concatenate(outs) if outs else np.zeros((0, 1), dtype=np.float32)


class TorchMLPRegressor(RegressorMixin, _TorchMLP):
    """Regression MLP trained with Huber loss on the standardised target."""

    def fit(self, X: pd.DataFrame, y):
        import torch

        y = np.asarray(y, dtype=np.float64)
        self.y_mean_, self.y_scale_ = float(y.mean()), float(y.std() + 1e-9)
        ys = ((y - self.y_mean_) / self.y_scale_).astype(np.float32).reshape(-1, 1)
        return self._fit(X, ys, 1, torch.nn.HuberLoss())

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self._forward(X)[:, 0].astype(np.float64) * self.y_scale_ + self.y_mean_


class TorchMLPClassifier(ClassifierMixin, _TorchMLP):
    """Classification MLP trained with cross-entropy."""

    def fit(self, X: pd.DataFrame, y):
        import torch

        self.classes_, codes = np.unique(np.asarray(y), return_inverse=True)
        return self._fit(X, codes.astype(np.int64), len(self.classes_), torch.nn.CrossEntropyLoss())

    def predict_proba(self, X: pd.DataFrame) -> np.ndarray:
        logits = self._forward(X).astype(np.float64)
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    def predict(self, X: pd.DataFrame) -> np.ndarray:
        return self.classes_[self.predict_proba(X).argmax(axis=1)]
