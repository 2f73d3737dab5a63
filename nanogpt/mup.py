"""The Maximal Update Parametrization (muP) for Adam: its rules, once, for the model and the
optimizer.

Yang et al. 2022, "Tensor Programs V: Tuning Large Neural Networks via Zero-Shot Hyperparameter
Transfer" (arXiv 2203.03466), as microsoft/mup 1.0.0 applies them to Adam (`set_base_shapes`,
`mup.init`, `MuReadout`/`MuSharedReadout`, `MuAdamW`). Under muP the hyperparameters tuned on a
narrow base model stay the best ones as the model widens; under the standard parametrization (SP)
the best lr moves with width.

A parameter's dimensions that differ from the same parameter's in the base model (this model at
`mup_base_width`, made of heads of the same size: `ModelConfig.mup_base`) grow with width. Its
width multiplier m is its fan-in over the base model's (its last growing dimension: `in_features`
for every Linear here).

| parameter                                   | grows  | init std         | Adam lr | weight decay |
|---------------------------------------------|--------|------------------|---------|--------------|
| hidden matrices: attention and MLP Linears  | 2 dims | base's / sqrt(m) | / m     | x m          |
| embeddings, readout (tied or not), norms,   | <= 1   | the base model's | x 1     | x 1          |
| biases                                      |        |                  |         |              |

- Hidden init: variance proportional to 1/fan_in, anchored at the base model. GPT-2's
  normal(0, 0.02) does not shrink with width, so muP divides it by sqrt(m). PyTorch's own Linear
  init (uniform +-1/sqrt(fan_in)) shrinks already, and shrinks the readout and the biases too:
  those go back to the base model's scale (x sqrt(m)), as `set_base_shapes` rescales them. The tied
  readout is the embedding and keeps the embedding's init.
- Weight decay: MuAdamW multiplies it by m where it divides the lr by m, so AdamW's decay per step
  (lr x wd) of a hidden matrix does not change with width.
- Readout: the logits are multiplied by 1/m (`MuReadout`): the readout's input has grown by m.
- Attention: muP scores q.k/d where SP scores q.k/sqrt(d), so that scores stay bounded as the
  head size d grows. The base model here widens by heads at this model's head size, so d never
  grows and the scale stays 1/sqrt(d) = sqrt(d_base)/d: microsoft/mup's 8/d at its d = 64.

At the base width every m is 1 and muP is SP: experiments.canonical gives both one run id.
tests/test_mup.py checks each rule against the `mup` package itself, parameter by parameter.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn


@dataclass(frozen=True)
class Width:
    """How a parameter's shape differs from its base model's: microsoft/mup's `infshape`."""

    grows: int  # how many of its dimensions differ from the base model's (infshape.ninf())
    mult: float  # its fan-in (last growing dimension) over the base model's; 1 if none grows

    @property
    def hidden(self) -> bool:
        """A hidden matrix: both its dimensions grow with width."""
        return self.grows == 2

    @property
    def lr_scale(self) -> float:
        return 1 / self.mult if self.hidden else 1.0

    @property
    def weight_decay_scale(self) -> float:
        return self.mult if self.hidden else 1.0


SP = Width(0, 1.0)


def widths(model: nn.Module, base: nn.Module) -> dict[str, Width]:
    """Each parameter's `Width`, by name, against the parameter of that name in `base`."""
    base_shapes = {name: p.shape for name, p in base.named_parameters()}
    out = {}
    for name, p in model.named_parameters():
        shape, base_shape = p.shape, base_shapes[name]
        grown = [i for i, (a, b) in enumerate(zip(shape, base_shape, strict=True)) if a != b]
        out[name] = Width(len(grown), shape[grown[-1]] / base_shape[grown[-1]]) if grown else SP
    return out


class Multiply(nn.Module):
    """Multiplies its input by a constant: muP's readout multiplier 1/m."""

    def __init__(self, factor: float):
        super().__init__()
        self.factor = factor

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


@torch.no_grad()
def rescale_init(linears: dict[str, nn.Linear], widths: dict[str, Width], init: str) -> None:
    """Turn a freshly initialised SP model into muP's init, in place. No random draws: a muP model
    starts from its SP twin's random numbers. `linears`: the Linears by name, the tied readout not
    among them (it is the embedding)."""
    for name, linear in linears.items():
        width = widths[f"{name}.weight"]
        if init == "gpt2" and width.hidden:  # normal(0, 0.02) does not shrink with fan-in
            linear.weight *= width.mult**-0.5
        if init == "default":  # uniform(+-1/sqrt(fan_in)) shrinks the readout and biases too
            if not width.hidden:
                linear.weight *= width.mult**0.5
            if linear.bias is not None:
                linear.bias *= width.mult**0.5
