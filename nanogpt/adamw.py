"""AdamW for an ensemble: every member (a row of `nanogpt.stack.FlatParameters`) with its own lr and
scalars.

torch's AdamW takes one lr per parameter group, and a member's slice of a stacked tensor is not a
parameter it could hold. So this one keeps each member's moments as views beside its parameters and
calls the kernel that `torch.optim.AdamW(fused=True)` calls, once per member and parameter group, on
exactly the tensors (one per parameter) and scalars its lone run passes: a member's update is its
lone run's, bit for bit, and a dozen calls step all members whatever their number of parameters. Its
state converts to and from torch's own state dict, so a member's checkpoint is the checkpoint its
lone run would write.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from nanogpt.config import TrainConfig
from nanogpt.stack import FlatParameters
from nanogpt.train import ParamGroup

EPS = 1e-8  # torch.optim.AdamW's default, which the lone trainer uses


class EnsembleAdamW:
    def __init__(self, flat: FlatParameters, groups: Sequence[Sequence[ParamGroup]],
                 cfgs: Sequence[TrainConfig]):
        """`groups[i]` are member i's parameter groups (`nanogpt.train.param_groups`), `cfgs[i]` its
        settings."""
        self.flat, self.cfgs = flat, cfgs
        self.exp_avg = torch.zeros_like(flat.data)
        self.exp_avg_sq = torch.zeros_like(flat.data)
        # torch keeps a float32 step count per parameter; the members' are one (E,) tensor, member
        # i's a view.
        self.steps = torch.zeros(flat.size, dtype=torch.float32, device=flat.data.device)
        # Member i's groups, each with its parameters, gradients and moments, one tensor per
        # parameter as torch holds them: views made once (every update is in place, so they stay the
        # member's own). A group without parameters (the bigram table has no vectors) is skipped, as
        # torch skips it.
        self.tensors = [[(g, *([flat.view(rows, i, name) for name in g.names]
                               for rows in (flat.data, flat.grad, self.exp_avg, self.exp_avg_sq)),
                          [self.steps[i]] * len(g.names)) for g in member if g.names]
                        for i, member in enumerate(groups)]

    @torch.no_grad()
    def step(self, lrs: Sequence[float], members: Sequence[int]) -> None:
        """One AdamW step of the given members, member i at lr `lrs[i]` (times its group's
        multiplier)."""
        for i in members:
            self.steps[i] += 1
            cfg = self.cfgs[i]
            for group, params, grads, exp_avgs, exp_avg_sqs, steps in self.tensors[i]:
                torch._fused_adamw_(params, grads, exp_avgs, exp_avg_sqs, [], steps,
                                    lr=lrs[i] * group.lr_scale, beta1=cfg.beta1, beta2=cfg.beta2,
                                    weight_decay=group.weight_decay, eps=EPS, amsgrad=False,
                                    maximize=False)

    def member_state(self, i: int) -> dict[str, dict[str, torch.Tensor]]:
        """Member i's AdamW state by parameter name, as torch keeps it per parameter (views: copy to
        keep)."""
        return {name: {"step": self.steps[i], "exp_avg": self.flat.view(self.exp_avg, i, name),
                       "exp_avg_sq": self.flat.view(self.exp_avg_sq, i, name)}
                for name in self.flat.shapes}

    def load_member(self, i: int, state: dict[str, dict[str, Any]]) -> None:
        """Member i's state from `member_state`'s layout (a parameter torch never stepped has none:
        zeros)."""
        for name in self.flat.shapes:
            moments = state.get(name, {})
            for key, rows in (("exp_avg", self.exp_avg), ("exp_avg_sq", self.exp_avg_sq)):
                view = self.flat.view(rows, i, name)
                view.copy_(moments[key]) if key in moments else view.zero_()
        steps = {float(m["step"]) for m in state.values() if "step" in m}
        self.steps[i] = steps.pop() if steps else 0.0
