"""Many GPTs of one architecture as one batched model: HFTA's horizontal fusion, derived from
`nanogpt.model`.

E members that share a `ModelConfig` (they differ in seed, so in weights) become one module that
runs all of them in one forward: the members' sequences are stacked along the batch dimension,
member-major, and only the layers that own parameters learn to tell them apart. So the GPT's own
`forward` code runs unchanged:

- a Linear holds weights (E, out, in) and multiplies each member's rows by its own matrix (one
  `baddbmm`);
- an Embedding looks each row up in its member's table; a norm scales each row by its member's
  weight;
- attention needs nothing: a (member, sequence) pair is one more sequence to the fused kernel;
- parameter-free modules (dropout, activations, rotary positions) are shared as they are.

Every member's parameters are views into one flat tensor, and their gradients views into another,
laid out in `GPT.named_parameters()` order: the per-member optimizer (`nanogpt.adamw`) steps each
member's own tensors, and a member's state dict is a set of views. Horizontal fusion: Wang et al.,
"Horizontally Fused Training Array" (MLSys 2021).
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanogpt.model import GPT, PositionEmbedding


class FlatParameters:
    """The members' parameters in one flat tensor: each named parameter an (E, *shape) block of it,
    member-major.

    Every parameter, its gradient and each member's slice of either is then a contiguous view, and
    zeroing all gradients is one op.
    """

    def __init__(self, members: Sequence[GPT]):
        named = list(members[0].named_parameters())  # a tied weight once, under its first name
        self.size = len(members)
        self.shapes = {name: p.shape for name, p in named}
        self.offsets: dict[str, int] = {}
        n = 0
        for name, p in named:
            self.offsets[name], n = n, n + self.size * p.numel()
        self.data = torch.cat([torch.stack([dict(m.named_parameters())[name].detach()
                                            for m in members]).view(-1)
                               for name, _ in named])
        self.grad = torch.zeros_like(self.data)

    def block(self, storage: torch.Tensor, name: str) -> torch.Tensor:
        """Every member's `name` in `storage` (the data, the gradients, or a tensor laid out as they
        are)."""
        start = self.offsets[name]
        return storage[start:start + self.size * math.prod(self.shapes[name])].view(
            self.size, *self.shapes[name])

    def view(self, storage: torch.Tensor, i: int, name: str) -> torch.Tensor:
        """Member i's `name` in `storage`."""
        return self.block(storage, name)[i]

    def parameter(self, name: str) -> nn.Parameter:
        """A leaf parameter (E, *shape) that shares the flat storage; its gradient accumulates into
        `grad`."""
        p = nn.Parameter(self.block(self.data, name))
        p.grad = self.block(self.grad, name)  # backward adds into it, in place
        return p

    def member(self, i: int) -> dict[str, torch.Tensor]:
        """Member i's parameters by name, as views."""
        return {name: self.view(self.data, i, name) for name in self.shapes}


class StackedLinear(nn.Module):
    def __init__(self, weight: nn.Parameter, bias: nn.Parameter | None):
        super().__init__()
        self.weight, self.bias = weight, bias
        self.size = weight.size(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = x.reshape(self.size, -1, x.size(-1))  # (E, B*T, in): member-major
        w = self.weight.transpose(1, 2)
        out = (torch.bmm(rows, w) if self.bias is None
               else torch.baddbmm(self.bias.unsqueeze(1), rows, w))
        return out.view(*x.shape[:-1], -1)


class StackedEmbedding(nn.Module):
    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight
        self.size = weight.size(0)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        member = torch.arange(self.size,
                              device=idx.device).repeat_interleave(idx.size(0) // self.size)
        return self.weight[member.view(-1, *(1,) * (idx.dim() - 1)), idx]


class StackedPositions(nn.Module):
    """PositionEmbedding per member: each member's rows get its own position table."""

    def __init__(self, weight: nn.Parameter):
        super().__init__()
        self.weight = weight
        self.size = weight.size(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        E, (B, T, C) = self.size, x.shape
        return (x.view(E, B // E, T, C) + self.weight[:, None, :T]).view(B, T, C)


class StackedLayerNorm(nn.Module):
    """LayerNorm, each member's rows with its own weight and bias: one fused norm per member.

    Not one batched norm and a batched affine: the fused kernel's backward rounds differently from
    that decomposition, and a run's numbers must not depend on how it was trained.
    """

    def __init__(self, norm: nn.LayerNorm, weight: nn.Parameter, bias: nn.Parameter | None):
        super().__init__()
        self.shape, self.eps = norm.normalized_shape, norm.eps
        self.weight, self.bias = weight, bias
        self.size = weight.size(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        biases = self.bias.unbind() if self.bias is not None else (None,) * self.size
        return torch.cat([F.layer_norm(xi, self.shape, w, b, eps=self.eps)
                          for xi, w, b in zip(x.chunk(self.size), self.weight.unbind(), biases,
                                              strict=True)])


class StackedRMSNorm(nn.Module):
    """RMSNorm, each member's rows with its own weight: torch's own composition of it (`F.rms_norm`
    is not one kernel), op for op on the whole batch, so that every gradient sums its terms in the
    lone run's order."""

    def __init__(self, norm: nn.RMSNorm, weight: nn.Parameter):
        super().__init__()
        self.eps = norm.eps if norm.eps is not None else torch.finfo(weight.dtype).eps
        self.weight = weight
        self.size = weight.size(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normed = x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.eps)
        w = self.weight.view(self.size, *(1,) * (x.dim() - 1), -1)
        return (normed.unflatten(0, (self.size, -1)) * w).flatten(0, 1)


def stack(members: Sequence[GPT]) -> tuple[GPT, FlatParameters]:
    """One GPT module that runs every member on its share of the batch (member-major), and the flat
    parameters.

    The members must share their config; they are left as they are (the stack copies their weights).
    """
    config = members[0].config
    if any(m.config != config for m in members):
        raise ValueError("an ensemble's members must share one model config")
    flat = FlatParameters(members)
    stacked = copy.deepcopy(members[0])
    names = {id(p): name for name, p in stacked.named_parameters()}
    made: dict[str, nn.Parameter] = {}

    def param(p: nn.Parameter | None) -> nn.Parameter | None:
        if p is None:
            return None
        name = names[id(p)]
        if name not in made:  # a tied weight: one stacked parameter for both modules
            made[name] = flat.parameter(name)
        return made[name]

    for parent in list(stacked.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear):
                new: nn.Module = StackedLinear(param(child.weight), param(child.bias))
            elif isinstance(child, nn.Embedding):
                new = StackedEmbedding(param(child.weight))
            elif isinstance(child, nn.LayerNorm):
                new = StackedLayerNorm(child, param(child.weight), param(child.bias))
            elif isinstance(child, nn.RMSNorm):
                new = StackedRMSNorm(child, param(child.weight))
            elif isinstance(child, PositionEmbedding):
                new = StackedPositions(param(child.wpe.weight))
            else:
                continue
            setattr(parent, child_name, new)
    return stacked, flat
