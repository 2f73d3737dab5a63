"""The model's and the training loop's settings: plain dataclasses with no torch.

`nanogpt.model` and `nanogpt.train` use them; they live apart so that code which only reads or
checks configs (the run store's reader, analysis on a laptop without torch) can import them without
importing torch.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Literal, get_args, get_origin, get_type_hints

TINY_SHAKESPEARE = "tinyshakespeare"  # the `data` value that names the built-in corpus
TINY_SHAKESPEARE_SHA256 = "86c4e6aa9db7c042ec79f339dcb96d42b0075e16b8fc2e86bf0ca57e2dc565ed"
# autocast dtypes a run may ask for (nanogpt.precision)
DTYPES = ("auto", "float32", "bfloat16", "float16")


@dataclass(frozen=True)
class ModelConfig:
    vocab_size: int = 65
    block_size: int = 8
    n_layer: int = 3
    n_head: int = 4
    n_embd: int = 32
    lm_head: bool = True  # token embedding of width n_embd + linear head; off = bigram table
    pos_emb: bool = True  # learned absolute position embeddings
    attention: bool = True  # causal self-attention sub-layer in each block
    mlp: bool = True  # feed-forward sub-layer in each block
    # MLP kind: 4x width with ReLU/GELU, or SwiGLU
    activation: Literal["relu", "gelu", "swiglu"] = "relu"
    residual: bool = True  # x + f(x) around each sub-layer
    # where the norms sit (their kind is `norm`)
    norm_position: Literal["none", "pre", "post"] = "pre"
    init: Literal["default", "gpt2"] = "gpt2"  # PyTorch defaults or normal(0, 0.02)
    scaled_residual_init: bool = False  # GPT-2: residual projections get std 0.02/sqrt(2*n_layer)
    dropout: float = 0.0
    bias: bool = True
    weight_tying: bool = False  # share the token embedding with the LM head
    # Added after config format 1: the run's hash leaves them out at these defaults
    # (experiments.settings).
    norm: Literal["layernorm", "rmsnorm"] = "layernorm"
    rope: bool = False  # rotary position embedding of q and k in every attention layer
    qk_norm: bool = False  # normalise each head's q and k (kind: `norm`) before the dot product
    # key/value heads shared by the n_head query heads; 0 = n_head, 1 = multi-query
    n_kv_head: int = 0
    # How the init, the per-layer Adam lrs and the logits scale with n_embd (nanogpt.mup): the
    # standard parametrization, or muP from a base model of width mup_base_width (None: n_embd).
    parametrization: Literal["sp", "mup"] = "sp"
    mup_base_width: int | None = None

    @property
    def width(self) -> int:
        """Width of the residual stream: n_embd, or the vocab for the bigram table."""
        return self.n_embd if self.lm_head else self.vocab_size

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def mup_base(self) -> ModelConfig | None:
        """muP's base model: this one at width `mup_base_width`, made of heads of this model's size
        (fewer or more of them), under SP; only its shapes are used (nanogpt.mup). None under SP or
        at the base width, where muP is SP."""
        if self.parametrization == "sp" or self.mup_base_width in (None, self.n_embd):
            return None
        width = self.mup_base_width
        return replace(self, n_embd=width, n_head=max(1, width // self.head_size),
                       parametrization="sp", mup_base_width=None)

    def validate(self) -> None:
        """Raise ValueError with a message a person can act on."""
        for name in ("vocab_size", "block_size", "n_embd", "n_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_layer < 0:
            raise ValueError(f"n_layer must be 0 or more, got {self.n_layer}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        for name, hint in get_type_hints(ModelConfig).items():
            if get_origin(hint) is Literal and getattr(self, name) not in get_args(hint):
                raise ValueError(f"{name} must be one of {', '.join(get_args(hint))}, got "
                                 f"{getattr(self, name)!r}")
        if not self.lm_head and (self.attention or self.mlp or self.weight_tying):
            raise ValueError(
                "attention, mlp and weight_tying need lm_head=true: the bigram table has no hidden "
                "width"
            )
        if self.attention and self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                "pick n_head among the divisors of n_embd"
            )
        if self.n_kv_head < 0 or (self.n_kv_head and self.n_head % self.n_kv_head):
            raise ValueError(
                f"n_kv_head ({self.n_kv_head}) must divide n_head ({self.n_head}); 0 means n_head, "
                "1 multi-query"
            )
        if self.rope and self.attention and self.head_size % 2:
            raise ValueError("rope rotates pairs of channels: head size n_embd/n_head "
                             f"({self.head_size}) must be even")
        if self.parametrization == "mup" and self.mup_base_width is not None:
            self._validate_mup_base()

    def _validate_mup_base(self) -> None:
        base, size = self.mup_base_width, self.head_size
        if base < 1:
            raise ValueError(f"mup_base_width must be at least 1, got {base}")
        # The base model widens by heads, as the width axis does: its head size is this model's.
        if self.attention and base % size:
            raise ValueError(f"mup_base_width ({base}) must be a multiple of the head size "
                             f"n_embd/n_head ({size}): muP's base model is this one with heads of "
                             "the same size, fewer or more of them")
        if self.attention and self.n_kv_head and (base // size) % self.n_kv_head:
            raise ValueError(f"mup_base_width ({base}) gives the base model {base // size} heads, "
                             f"which its n_kv_head ({self.n_kv_head}) key/value heads must divide")



@dataclass(frozen=True)
class TrainConfig:
    batch_size: int = 32
    max_iters: int = 5000
    eval_interval: int = 500
    eval_iters: int = 200
    lr: float = 1e-3
    lr_schedule: Literal["constant", "cosine"] = "constant"
    warmup_iters: int = 0
    min_lr: float = 1e-4  # cosine floor
    lr_decay_iters: int = 0  # cosine length; 0 = max_iters
    weight_decay: float = 0.01  # on matrices only (not biases, norms)
    beta1: float = 0.9
    beta2: float = 0.999
    grad_clip: float = 0.0  # max grad norm; 0 = off
    # Autocast dtype for matmuls; auto = bf16 where the device computes it natively, fp16 (with a
    # gradient scaler) on CUDA GPUs that have fp16 tensor cores but no bf16 ones
    # (nanogpt.precision).
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "float32"
    log_interval: int = 100
    # PaLM's auxiliary z-loss, coefficient x log^2 Z of the output softmax's normaliser: it keeps
    # the output logits from drifting (Chowdhery et al. 2022; Wortsman et al. 2023 use 1e-4). 0 =
    # off; losses recorded stay plain CE.
    z_loss: float = 0.0

    def validate(self) -> None:
        for name in ("batch_size", "max_iters", "eval_interval", "eval_iters", "log_interval"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        for name in ("lr", "min_lr", "weight_decay", "grad_clip", "z_loss"):
            value = getattr(self, name)
            if not math.isfinite(value) or value < 0:
                raise ValueError(f"{name} must be a finite number >= 0, got {value}")
        if self.lr == 0:
            raise ValueError("lr must be positive, got 0")
        if self.warmup_iters < 0 or self.lr_decay_iters < 0:
            raise ValueError("warmup_iters and lr_decay_iters must be 0 or more")
        if not (0 <= self.beta1 < 1 and 0 <= self.beta2 < 1):
            raise ValueError(f"beta1 and beta2 must be in [0, 1), got {self.beta1}, {self.beta2}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError("lr_schedule must be 'constant' or 'cosine', got "
                             f"{self.lr_schedule!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {self.dtype!r}")

    def lr_at(self, step: int) -> float:
        if self.lr_schedule == "constant":
            return self.lr
        if step < self.warmup_iters:
            return self.lr * (step + 1) / (self.warmup_iters + 1)
        decay_iters = self.lr_decay_iters or self.max_iters
        if step >= decay_iters:
            return self.min_lr
        progress = (step - self.warmup_iters) / max(1, decay_iters - self.warmup_iters)
        return self.min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (self.lr - self.min_lr)
