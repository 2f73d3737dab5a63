"""One character-level GPT whose components are switches in `ModelConfig`.

All classic switches on gives a plain pre-LN GPT (the lecture's final model, nanoGPT's
architecture). All switches off gives the lecture's bigram model: next-character logits read
straight from a vocab x vocab table. Everything in between is a rung of the ablation ladder.

The modern switches turn that GPT-2 block into a Llama-style one, one component at a time:
- `norm`: LayerNorm (GPT-2) or RMSNorm (Llama); where the norms sit is `norm_position`
  (none/pre/post);
- `activation`: the 4x MLP with ReLU or GELU, or SwiGLU (gated, hidden size matched in parameters);
- positions: learned absolute (`pos_emb`), rotary on q and k (`rope`), both, or neither (NoPE);
- `qk_norm`: normalise each head's q and k before the dot product (OLMo 2, Qwen 3, Gemma 3);
- `n_kv_head`: grouped-query attention, n_head query heads sharing n_kv_head key/value heads.

`parametrization: mup` scales the init, the per-layer Adam lrs and the logits with the width
(muP), so that the hyperparameters of a base model of width `mup_base_width` transfer; its rules
are in nanogpt.mup.

A switched-off component is simply not built: it owns no parameters and costs nothing at run
time (a residual block adds 0 for it). `forward` therefore has no branches on the config; the
choices are made once, in `__init__` (`nn.Identity` where something is absent, one block class
per wiring), and parameter names never depend on unrelated switches (`blocks.0.attn.qkv.weight`
whatever the norm placement or residual).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator

import torch
import torch.nn as nn
from torch.nn import functional as F

from nanogpt import mup
from nanogpt.config import ModelConfig


def make_norm(cfg: ModelConfig, size: int) -> nn.Module:
    """LayerNorm re-centres and re-scales (GPT-2); RMSNorm only re-scales and has no bias (Llama):
    re-centring turned out not to matter (Zhang & Sennrich 2019), and one statistic fewer is one
    reduction fewer."""
    if cfg.norm == "rmsnorm":
        return nn.RMSNorm(size, eps=1e-5)
    return nn.LayerNorm(size, bias=cfg.bias)


class PositionEmbedding(nn.Module):
    """Adds a learned embedding of each position to the token embeddings."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.wpe = nn.Embedding(cfg.block_size, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.wpe(torch.arange(x.size(1), device=x.device))


class Rotary(nn.Module):
    """RoPE (Su et al. 2021): rotate channel pair i of a query or key at position m by angle m *
    base^(-2i/d).

    Rotations compose, so the score q_m . k_n depends on m - n only: attention sees relative
    positions, with no parameters. Channel i pairs with i + d/2 (the GPT-NeoX/Llama layout).
    """

    def __init__(self, head_size: int, block_size: int, base: float = 10000.0):
        super().__init__()
        inv_freq = base ** (-torch.arange(0, head_size, 2, dtype=torch.float32) / head_size)
        angles = torch.outer(torch.arange(block_size, dtype=torch.float32), inv_freq)  # (T, d/2)
        # Recomputable, so not saved: checkpoints hold the same names with rope on or off.
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, heads, T, head_size), positions 0..T-1."""
        cos, sin = self.cos[: x.size(-2)], self.sin[: x.size(-2)]
        x1, x2 = x.chunk(2, dim=-1)
        return torch.cat((x1 * cos - x2 * sin, x1 * sin + x2 * cos), dim=-1).type_as(x)


def causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, dropout_p: float,
                     enable_gqa: bool = False) -> torch.Tensor:
    """Fused causal attention (flash / memory-efficient kernels); scales by 1/sqrt(head size).

    On CPU, PyTorch's flash kernel is slower in bf16 than in fp32 at these shapes, so CPU attention
    runs in fp32 even under bf16 autocast; GPUs keep bf16.
    `enable_gqa` lets k and v have fewer heads than q (each shared by n_head / n_kv_head queries).
    """
    if q.device.type == "cpu":
        with torch.autocast("cpu", enabled=False):
            return F.scaled_dot_product_attention(q.float(), k.float(), v.float(), is_causal=True,
                                                  dropout_p=dropout_p, enable_gqa=enable_gqa)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, dropout_p=dropout_p,
                                          enable_gqa=enable_gqa)


class CausalSelfAttention(nn.Module):
    """n_head query heads of size n_embd // n_head; n_head=1 is the lecture's single head.

    Grouped-query attention (Ainslie et al. 2023): the n_head queries share n_kv_head key/value
    heads, shrinking the k/v projection (and an inference KV cache) by n_head / n_kv_head.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_head, self.head_size = cfg.n_head, cfg.head_size
        n_kv_head = cfg.n_kv_head or cfg.n_head
        self.gqa = n_kv_head != cfg.n_head
        self.dropout = cfg.dropout
        self.sizes = (cfg.n_embd, n_kv_head * cfg.head_size, n_kv_head * cfg.head_size)  # q, k, v
        self.qkv = nn.Linear(cfg.n_embd, sum(self.sizes), bias=cfg.bias)
        # QK-norm keeps the attention logits from growing until a softmax saturates, an instability
        # seen when training large models (ViT-22B, OLMo 2); Qwen 3 and Gemma 3 normalise q and k
        # per head too.
        self.q_norm = make_norm(cfg, cfg.head_size) if cfg.qk_norm else nn.Identity()
        self.k_norm = make_norm(cfg, cfg.head_size) if cfg.qk_norm else nn.Identity()
        self.rotary = Rotary(cfg.head_size, cfg.block_size) if cfg.rope else nn.Identity()
        self.proj = nn.Linear(cfg.n_embd, cfg.n_embd, bias=cfg.bias)
        self.proj.is_residual_projection = True
        self.resid_dropout = nn.Dropout(cfg.dropout)

    def heads(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """q, k, v as (B, heads, T, head_size), q and k normed and rotated: what the dot products
        see."""
        B, T, _ = x.shape
        q, k, v = (t.view(B, T, -1, self.head_size).transpose(1, 2)
                   for t in self.qkv(x).split(self.sizes, dim=-1))
        return self.rotary(self.q_norm(q)), self.rotary(self.k_norm(k)), v

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        q, k, v = self.heads(x)
        y = causal_attention(q, k, v, self.dropout if self.training else 0.0, self.gqa)
        y = y.transpose(1, 2).reshape(x.shape)
        return self.resid_dropout(self.proj(y))

    def max_logit(self, x: torch.Tensor) -> torch.Tensor:
        """The largest attention logit q.k/sqrt(d) any head gives a key it may attend to (j <= i).

        Its growth until the softmax saturates is the instability QK-norm removes (Dehghani et al.
        2023, Wortsman et al. 2023). Materialises the scores, so it is for evaluation, never the
        training step.
        """
        q, k, _ = (t.float() for t in self.heads(x))
        # GQA: each kv head serves its group of queries
        k = k.repeat_interleave(q.size(1) // k.size(1), dim=1)
        scores = q @ k.transpose(-2, -1) / math.sqrt(self.head_size)
        T = x.size(1)
        allowed = torch.ones(T, T, dtype=torch.bool, device=x.device).tril()
        return scores.masked_fill(~allowed, -math.inf).amax()


class SwiGLU(nn.Module):
    """silu(a) * b over the two halves of its input: a gate that scales each hidden unit (Shazeer
    2020)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = x.chunk(2, dim=-1)
        return F.silu(a) * b


def mlp_hidden(cfg: ModelConfig) -> int:
    """Hidden width: 4 * n_embd, or for SwiGLU the width whose parameters match that 4x MLP.

    SwiGLU has three n_embd x hidden matrices (gate, up, down) where the 4x MLP has two, so with
    c = n_embd and b = 1 if biases else 0, it solves 3*c*h + 2*b*h = 8*c*c + 4*b*c (both share the
    down projection's bias c): h = 8/3 c without biases. Rounding to whole units moves the count by
    at most (3c + 2) / 2, under 1% from n_embd = 19 on (Llama rounds h up to a multiple of 256
    instead).
    """
    if cfg.activation != "swiglu":
        return 4 * cfg.n_embd
    c, b = cfg.n_embd, int(cfg.bias)
    return round((8 * c * c + 4 * b * c) / (3 * c + 2 * b))


class MLP(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        hidden = mlp_hidden(cfg)
        act = {"relu": nn.ReLU, "gelu": nn.GELU, "swiglu": SwiGLU}[cfg.activation]
        # SwiGLU's gate and up projections are one matrix, split in half by the activation.
        self.fc = nn.Linear(cfg.n_embd, (2 if act is SwiGLU else 1) * hidden, bias=cfg.bias)
        self.act = act()
        self.proj = nn.Linear(hidden, cfg.n_embd, bias=cfg.bias)
        self.proj.is_residual_projection = True
        self.dropout = nn.Dropout(cfg.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.proj(self.act(self.fc(x))))


class Nothing(nn.Module):
    """An absent sub-layer inside a residual block: it adds nothing to the stream (x + 0 is x)."""

    def forward(self, x: torch.Tensor) -> int:
        return 0


class Block(nn.Module):
    """A transformer block: communicate (attention), then compute (MLP); pre-norm with residuals
    (GPT-2, Llama).

    The other wirings are the subclasses below, one `forward` each; `make_block` picks one. A
    switched-off sub-layer leaves the stream as it is: it is `Nothing` where a residual adds it,
    `nn.Identity` where none does (and its norm is `nn.Identity` too), so every wiring keeps the
    same parameter names.
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        normed = cfg.norm_position != "none"
        absent = Nothing if cfg.residual else nn.Identity
        self.ln_1 = make_norm(cfg, cfg.n_embd) if cfg.attention and normed else nn.Identity()
        self.attn = CausalSelfAttention(cfg) if cfg.attention else absent()
        self.ln_2 = make_norm(cfg, cfg.n_embd) if cfg.mlp and normed else nn.Identity()
        self.mlp = MLP(cfg) if cfg.mlp else absent()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.ln_1(x))  # the residual stream itself is never normed
        return x + self.mlp(self.ln_2(x))


class PostNormBlock(Block):
    """The original transformer's wiring: each sub-layer's sum with the stream is normed."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(x + self.attn(x))
        return self.ln_2(x + self.mlp(x))


class PreNormPlainBlock(Block):
    """Pre-norm without residuals: the ladder's rungs before `residual`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.attn(self.ln_1(x))
        return self.mlp(self.ln_2(x))


class PostNormPlainBlock(Block):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.ln_1(self.attn(x))
        return self.ln_2(self.mlp(x))


def make_block(cfg: ModelConfig) -> Block:
    """The block of this wiring (where the norms sit, residual or not). No norm wires like pre with
    Identity norms."""
    post = cfg.norm_position == "post"
    if cfg.residual:
        return PostNormBlock(cfg) if post else Block(cfg)
    return PostNormPlainBlock(cfg) if post else PreNormPlainBlock(cfg)


class GPT(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        cfg.validate()
        self.config = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.width)
        self.add_positions = PositionEmbedding(cfg) if cfg.pos_emb else nn.Identity()
        self.drop = nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity()
        has_blocks = cfg.attention or cfg.mlp
        self.blocks = nn.Sequential(
            *(make_block(cfg) for _ in range(cfg.n_layer if has_blocks else 0)))
        # Pre-norm leaves the residual stream un-normalised, so GPT-2 adds one final norm;
        # post-norm already ends every sub-layer with one.
        self.ln_f = make_norm(cfg, cfg.width) if cfg.norm_position == "pre" else nn.Identity()
        base = cfg.mup_base  # None under SP and at muP's base width, where muP is SP
        # muP (nanogpt.mup): the readout's fan-in n_embd has grown by m = n_embd / the base model's,
        # so the logits are scaled back by 1/m.
        self.readout_multiplier = (mup.Multiply(base.n_embd / cfg.n_embd) if base and cfg.lm_head
                                   else nn.Identity())
        self.lm_head = (nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False) if cfg.lm_head
                        else nn.Identity())
        if cfg.weight_tying:
            self.lm_head.weight = self.wte.weight
        if cfg.init == "gpt2":
            self.apply(self._init_gpt2)
        if base:  # muP's init: the SP init just drawn, rescaled
            widths = self.widths()
            # A tied readout's weight is named wte.weight: it is the embedding, and keeps its init.
            linears = {name: m for name, m in self.named_modules()
                       if isinstance(m, nn.Linear) and f"{name}.weight" in widths}
            mup.rescale_init(linears, widths, cfg.init)

    def _init_gpt2(self, module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            std = 0.02
            # GPT-2: each block adds two projections to the residual stream; scale them so the
            # stream's variance does not grow with depth.
            if (self.config.scaled_residual_init and getattr(module, "is_residual_projection",
                                                             False)):
                std = 0.02 / math.sqrt(2 * self.config.n_layer)
            nn.init.normal_(module.weight, mean=0.0, std=std)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.drop(self.add_positions(self.wte(idx)))
        logits = self.lm_head(self.readout_multiplier(self.ln_f(self.blocks(x))))
        if targets is None:
            return logits, None
        loss = F.cross_entropy(logits.reshape(-1, logits.size(-1)).float(), targets.reshape(-1))
        return logits, loss

    @torch.inference_mode()
    def logit_stats(self, idx: torch.Tensor) -> dict[str, float | None]:
        """The largest attention logit (over layers, heads and allowed positions) and the largest
        output logit on one batch, in fp32: the two quantities whose growth marks the instabilities
        of high learning rates."""
        inputs: list[tuple[CausalSelfAttention, torch.Tensor]] = []
        hooks = [m.register_forward_pre_hook(lambda m, args: inputs.append((m, args[0])))
                 for m in self.modules() if isinstance(m, CausalSelfAttention)]
        try:
            logits, _ = self(idx)
        finally:
            for hook in hooks:
                hook.remove()
        attn = max((m.max_logit(x.float()).item() for m, x in inputs), default=None)
        return {"max_attn_logit": attn, "max_output_logit": logits.float().amax().item()}

    def widths(self) -> dict[str, mup.Width]:
        """Each parameter's growth from muP's base model, by name (as `named_parameters` names them:
        a tied weight once, as `wte.weight`); all `mup.SP` under SP or at the base width."""
        if self.config.mup_base is None:
            return dict.fromkeys((name for name, _ in self.named_parameters()), mup.SP)
        with torch.device("meta"):  # shapes only: nothing allocated, no random numbers drawn
            base = GPT(self.config.mup_base)
        return mup.widths(self, base)

    def num_params(self) -> int:
        """Trainable parameters, each shared tensor counted once."""
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self) -> int:
        """Exact forward FLOPs per token at full context (a multiply-add counts 2).

        Every matmul is a Linear (2 * in * out) plus, per attention layer, the scores and the
        weighted sum over block_size keys (2 * 2 * T * n_embd: every query head attends, however few
        key/value heads it shares). Embedding lookups, norms, activations (SwiGLU's gate too) and
        rotations are not matmuls and are left out, as in the PaLM/nanoGPT accounting; so the
        bigram table costs 0. Training (forward + backward) costs 3x this.
        """
        linear = sum(m.in_features * m.out_features for m in self.modules()
                     if isinstance(m, nn.Linear))
        n_attn = sum(isinstance(m, CausalSelfAttention) for m in self.modules())
        return 2 * linear + n_attn * 4 * self.config.block_size * self.config.n_embd

    @torch.inference_mode()
    def stream(
        self, idx: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
        generator: torch.Generator | None = None,
    ) -> Iterator[torch.Tensor]:
        """Sample characters after the (B, T) context idx, one (B, 1) tensor at a time, for as long
        as asked.

        Only the last block_size tokens are held (all the model ever reads), so memory stays bounded
        however many characters are drawn.
        """
        context = idx[:, -self.config.block_size :]
        while True:
            logits, _ = self(context)
            logits = logits[:, -1, :].float() / max(temperature, 1e-8)
            if top_k is not None:
                kth = torch.topk(logits, min(top_k, logits.size(-1))).values[:, [-1]]
                logits = logits.masked_fill(logits < kth, -float("inf"))
            probs = F.softmax(logits, dim=-1)
            token = torch.multinomial(probs, 1, generator=generator)
            yield token
            context = torch.cat((context, token), dim=1)[:, -self.config.block_size :]

    @torch.inference_mode()
    def generate(
        self, idx: torch.Tensor, max_new_tokens: int, temperature: float = 1.0,
        top_k: int | None = None, generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Sample max_new_tokens characters after the (B, T) context idx: idx and them, as one (B, T
        + n) tensor."""
        tokens = itertools.islice(self.stream(idx, temperature, top_k, generator), max_new_tokens)
        return torch.cat((idx, *tokens), dim=1)
