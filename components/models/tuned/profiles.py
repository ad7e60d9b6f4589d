"""User profiles as model inputs: which fields a tuned model reads, their vocabularies, and their codes per user.

A tuned model stores its own profile fields and, per field, its vocabulary (value of code c is ``vocab[c - 1]``;
code 0 = unknown or missing), copied from the tuning data.  Data and requests are mapped into that vocabulary by
value, so a model can be re-tuned or served against data whose own codes differ; a value the model never saw is
code 0 (unknown), like a missing one.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from components.data.sequences import SequenceDataset


class ProfileError(ValueError):
    """A tuning method needs user profiles the data does not have, or a field is unknown."""


def select_fields(data: SequenceDataset, fields: list[str] | None) -> tuple[list[str], list[list[str]]]:
    """The profile fields a model reads (``None``: every field the data has) and their vocabularies."""
    if fields is None:
        fields = list(data.profile_fields)
    unknown = [f for f in fields if f not in data.profile_fields]
    if unknown:
        raise ProfileError(f"profile field(s) {unknown} not in the data; it has {data.profile_fields or 'none'}")
    return list(fields), [list(data.profile_vocab[data.profile_fields.index(f)]) for f in fields]


def profile_table(data: SequenceDataset, fields: list[str], vocab: list[list[str]]) -> np.ndarray:
    """[n_users + 1, len(fields)] int64: each user's codes in the model's vocabulary (0 = unknown / missing)."""
    out = np.zeros((data.n_users + 1, len(fields)), np.int64)
    for j, (f, values) in enumerate(zip(fields, vocab)):
        if f not in data.profile_fields:
            continue  # the data lacks the field: every user unknown
        col = data.profile_fields.index(f)
        code = {v: i + 1 for i, v in enumerate(values)}
        lookup = np.array([0] + [code.get(v, 0) for v in data.profile_vocab[col]], np.int64)
        out[:, j] = lookup[data.profiles[:, col]]
    return out


def encode_requests(rows: list[dict | None], fields: list[str], vocab: list[list[str]]) -> np.ndarray:
    """Profile dicts (field -> value, values compared as strings; a missing field or None is unknown) -> codes."""
    out = np.zeros((len(rows), len(fields)), np.int64)
    for j, values in enumerate(vocab):
        code = {v: i + 1 for i, v in enumerate(values)}
        for r, row in enumerate(rows):
            value = (row or {}).get(fields[j])
            out[r, j] = 0 if value is None else code.get(_as_text(value), 0)
    return out


def _as_text(value) -> str:
    # Profiles are read as strings ("25", "F"); a request may send 25 or 25.0 for the same value.
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


class ProfileEmbedding(nn.Module):
    """x_u = concatenated per-field embeddings (PPR eq. 3's input); code 0 (unknown) has its own learned row."""

    def __init__(self, vocab_sizes: list[int], dim: int):
        super().__init__()
        self.tables = nn.ModuleList(nn.Embedding(n + 1, dim) for n in vocab_sizes)
        self.out_dim = dim * len(vocab_sizes)
        for t in self.tables:
            nn.init.normal_(t.weight, std=0.1)

    def forward(self, codes: Tensor) -> Tensor:
        """codes [B, n_fields] long -> [B, n_fields * dim]."""
        return torch.cat([t(codes[:, j]) for j, t in enumerate(self.tables)], dim=-1)
