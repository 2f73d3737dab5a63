"""One character-level GPT whose components are switches in `ModelConfig`.

All switches on gives a plain pre-LN GPT (the lecture's final model, nanoGPT's architecture).
All switches off gives the lecture's bigram model: next-character logits read straight from a
vocab x vocab table. Everything in between is a rung of the ablation ladder.

A switched-off component is simply not built: it owns no parameters and costs nothing at run
time. `forward` therefore has no branches on the config; the choices are made once, in
`__init__`, by composing small modules (`nn.Identity` where something is absent).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn as nn
from torch.nn import functional as F


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
    mlp: bool = True  # feed-forward sub-layer (4x width) in each block
    activation: Literal["relu", "gelu"] = "relu"
    residual: bool = True  # x + f(x) around each sub-layer
    layernorm: Literal["none", "pre", "post"] = "pre"
    init: Literal["default", "gpt2"] = "gpt2"  # PyTorch defaults or normal(0, 0.02)
    scaled_residual_init: bool = False  # GPT-2: residual projections get std 0.02/sqrt(2*n_layer)
    dropout: float = 0.0
    bias: bool = True
    weight_tying: bool = False  # share the token embedding with the LM head

    @property
    def width(self) -> int:
        """Width of the residual stream: n_embd, or the vocab for the bigram table."""
        return self.n_embd if self.lm_head else self.vocab_size

    def validate(self) -> None:
        """Raise ValueError with a message a person can act on."""
        for name in ("vocab_size", "block_size", "n_embd", "n_head"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.n_layer < 0:
            raise ValueError(f"n_layer must be 0 or more, got {self.n_layer}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {self.activation!r}")
        if self.layernorm not in ("none", "pre", "post"):
            raise ValueError(f"layernorm must be 'none', 'pre' or 'post', got {self.layernorm!r}")
        if self.init not in ("default", "gpt2"):
            raise ValueError(f"init must be 'default' or 'gpt2', got {self.init!r}")
        if not self.lm_head and (self.attention or self.mlp or self.weight_tying):
            raise ValueError(
                "attention, mlp and weight_tying need lm_head=true: the bigram table has no hidden width"
            )
        if self.attention and self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head}); "
                "pick n_head among the divisors of n_embd"
            )


def _sublayer(fn: nn.Module, cfg: ModelConfig) -> nn.Module:
    """Wrap one sub-layer with the configured normalisation and residual path.

    pre-LN:  x + f(LN(x))   (GPT-2, the lecture)      post-LN: LN(x + f(x))   (original transformer)
    """
    if cfg.layernorm == "pre":
        fn = nn.Sequential(nn.LayerNorm(cfg.width, bias=cfg.bias), fn)
    if cfg.residual:
        fn = Residual(fn)
    if cfg.layernorm == "post":
        fn = nn.Sequential(fn, nn.LayerNorm(cfg.width, bias=cfg.bias))
    return fn


class Residual(nn.Module):
    def __init__(self, fn: nn.Module):
        super().__init__()
        self.fn = fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fn(x)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float) -> torch.Tensor:
    """Fused causal attention (flash / memory-efficient kernels); scales by 1/sqrt(head size).

    On CPU, PyTorch's fp32 flash kernel runs forward+backward 3-8x faster than its bf16 one (see
    docs/benchmarks.md), so CPU attention runs in fp32 even under bf16 autocast; GPUs keep bf16.
    """
    if q.device.type == "cpu":
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p)


class CausalSelfAttention(nn.Module):
    """n_head heads of size n_embd // n_head; n_head=1 is the lecture's single head."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head = cfg.n_head
        self.dropout = cfg.dropout
        self.qkv = nn.Linear(cfg.n_embd, 3 * cfg.n_embd, bias=cfg.bias)
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.is_residual_projection = True
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.n_head, C // self.n_head).permute(2, 0, 3, 1, 4)
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0)
        y = y.transpose(1, 2).reshape(B, T, C)
        return self.resid_dropout(self.proj(y))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd, bias=cfg.bias)
        self.act = nn.ReLU() if cfg.activation == "relu" else nn.GELU()
        self.proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.is_residual_projection = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


def _block(cfg: ModelConfig) -> nn.Sequential:
    """A transformer block: the enabled sub-layers, in order (communicate, then compute)."""
    parts = []
    if cfg.attention:
        parts.append(_sublayer(CausalSelfAttention(cfg), cfg))
    if cfg.mlp:
        parts.append(_sublayer(MLP(cfg), cfg))
    return nn.Sequential(*parts)


class PositionEmbedding(nn.Module):
    """Adds a learned embedding of each position to the token embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wpe = nn.Embedding(cfg.block_size, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.wpe(torch.arange(x.size(1), device=x.device))


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.add_positions = PositionEmbedding(cfg) if cfg.pos_emb else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        has_blocks = cfg.attention or cfg.mlp
        self.blocks = nn.Sequential(*(_block(cfg) for _ in range(cfg.n_layer if has_blocks else 0)))
        # Pre-LN leaves the residual stream un-normalised, so GPT-2 adds one final LayerNorm;
        # post-LN already ends every sub-layer with one.
        self.ln_f = nn.LayerNorm(cfg.width, bias=cfg.bias) if cfg.layernorm == "pre" else nn.Identity()
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False) if cfg.lm_head else nn.Identity()
        if cfg.weight_tying:
            self.lm_head.weight = self.wte.weight
        if cfg.init == "gpt2":
            self.apply(self._init_gpt2)

    def _init_gpt2(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            std = 0.02
            # GPT-2: each block adds two projections to the residual stream; scale them so the
            # stream's variance does not grow with depth.
            if self.config.scaled_residual_init and getattr(module, "is_residual_projection", False):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.drop(self.add_positions(self.wte(idx)))
        logits = self.lm_head(self.ln_f(self.blocks(x)))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    def num_params(self) -> int:
        """Trainable parameters, each shared tensor counted once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Exact forward FLOPs per token at full context (a multiply-add counts 2).

        Every matmul is a Linear (2 * in * out) plus, per attention layer, the scores and the
        weighted sum over block_size keys (2 * 2 * T * n_embd). Embedding lookups, norms and
        activations are not matmuls and are left out, as in the PaLM/nanoGPT accounting; so the
        bigram table costs 0. Training (forward + backward) costs 3x this.
        """
        linear = sum(m.in_features * m.out_features for m in self.modules() if isinstance(m, nn.Linear))
        n_attn = sum(isinstance(m, CausalSelfAttention) for m in self.modules())
        return 2 * linear + n_attn * 4 * self.config.block_size * self.config.n_embd

    @torch.inference_mode()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0, top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample max_new_tokens characters after the (B, T) context idx."""
        for _ in range(max_new_tokens):
            context = idx[:, -self.config.block_size :]
            logits, _ = self(context)
            logits = logits[:, -1, :].float() / max(temperature, 1e-8)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = F.softmax(logits, dim=-1)
            idx = torch.cat((idx, torch.multinomial(probs, 1, generator=generator)), dim=1)
        return idx
