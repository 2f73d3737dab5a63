"""The training loop: AdamW, constant or warmup+cosine LR, periodic evaluation, checkpoints.

The loop knows nothing of run folders, W&B or Optuna. It reports through callbacks: `on_log`
every `log_interval` steps (the only other place the hot loop syncs with the device) and
`on_eval` at every evaluation, with a function that builds a full checkpoint on demand.
"""

from __future__ import annotations

import math
import random
import resource
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from nanogpt import checkpoint, precision
from nanogpt.config import TrainConfig
from nanogpt.data import Batches, Corpus
from nanogpt.distributed import SingleProcess
from nanogpt.model import GPT

# Tokens per evaluation forward (at least one training batch): measured on CPU, the tutorial's
# evaluation runs 1.4x faster in ~4k-token forwards than in 256-token ones, and slower again at 32k
# (cache misses).
EVAL_TOKENS = 4096


def log_z_squared(logits: torch.Tensor) -> torch.Tensor:
    """Mean over positions of (log Z)^2, Z = sum of exp(logits): what the z-loss penalises."""
    return torch.logsumexp(logits.float(), dim=-1).pow(2).mean()


class Callback:
    """Receives what the loop measures. Subclasses override what they need."""

    def on_log(self, step: int, loss: float, lr: float) -> None:
        pass

    def on_eval(self, metrics: dict[str, Any],
                checkpoint_state: Callable[[], dict[str, Any]]) -> None:
        pass


class StopTraining(Exception):  # noqa: N818 - a signal, not an error
    """Raised by a callback to end the run early with a status (e.g. 'pruned' by a sweep)."""

    def __init__(self, status: str, reason: str):
        super().__init__(reason)
        self.status, self.reason = status, reason


@dataclass(frozen=True)
class TrainResult:
    status: str  # completed | diverged | or a StopTraining status
    step: int
    reason: str | None = None
    # fp16: optimizer steps the gradient scaler skipped for inf/NaN gradients
    skipped_steps: int = 0


@dataclass(frozen=True)
class ParamGroup:
    """Parameters that share their optimizer settings: weight decay, and a multiplier of the
    scheduled lr."""

    names: tuple[str, ...]
    weight_decay: float
    lr_scale: float = 1.0


def param_groups(model: GPT, cfg: TrainConfig) -> list[ParamGroup]:
    """The one place that decides each parameter's settings, for the lone trainer's AdamW and the
    ensemble's alike.

    Weight decay on matrices only (not biases, norms). Under muP a hidden matrix's lr is divided,
    and its weight decay multiplied, by its width multiplier (nanogpt.mup); under SP there are two
    groups, the matrices then the vectors.
    """
    widths = model.widths()
    named = dict(model.named_parameters())  # a tied weight once, under its first name
    matrices: dict[tuple[float, float], list[str]] = {}  # (lr scale, decay scale) -> names
    for name in (n for n, p in named.items() if p.dim() >= 2):
        scales = (widths[name].lr_scale, widths[name].weight_decay_scale)
        matrices.setdefault(scales, []).append(name)
    vectors = tuple(n for n, p in named.items() if p.dim() < 2)
    return [ParamGroup(tuple(names), cfg.weight_decay * decay_scale, lr_scale)
            for (lr_scale, decay_scale), names in matrices.items()] + [ParamGroup(vectors, 0.0)]


def make_optimizer(model: GPT, groups: Sequence[ParamGroup], cfg: TrainConfig) -> torch.optim.AdamW:
    named = dict(model.named_parameters())
    return torch.optim.AdamW(
        [{"params": [named[n] for n in g.names], "weight_decay": g.weight_decay} for g in groups],
        # The fused kernel (CPU and CUDA) is one op per group: 4x faster than the per-tensor loop on
        # CPU.
        lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), fused=True,
    )


def rng_state(batches: dict[str, Batches]) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "python": random.getstate()}
    state |= {f"batches_{name}": b.state() for name, b in batches.items()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    if torch.backends.mps.is_available():  # dropout on an Apple GPU draws from the MPS generator
        state["mps"] = torch.mps.get_rng_state()
    return state


def restore_rng(state: dict[str, Any], batches: dict[str, Batches]) -> None:
    torch.set_rng_state(state["torch"])
    random.setstate(_as_tuple(state["python"]))
    for name, b in batches.items():
        b.restore(state[f"batches_{name}"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    if "mps" in state and torch.backends.mps.is_available():
        torch.mps.set_rng_state(state["mps"])


def _as_tuple(x: Any) -> Any:
    return tuple(_as_tuple(v) for v in x) if isinstance(x, list | tuple) else x


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: the CUDA allocator's high-water mark, MPS's driver allocation, or peak
    RSS on a CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    # Metal keeps no high-water mark: what its driver holds for this process now
    if device.type == "mps":
        return torch.mps.driver_allocated_memory() / 2**20
    # ru_maxrss is KiB on Linux but bytes on macOS
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / (2**20 if sys.platform == "darwin"
                                                                 else 2**10)


class Trainer:
    """Owns one run's model, optimizer and batch streams; `run()` trains to max_iters.

    `world` is a `nanogpt.distributed` world: data-parallel ranks train on their share of each
    global batch; a single process (the default) trains on all of it.
    """

    def __init__(self, model: GPT, corpus: Corpus, cfg: TrainConfig, seed: int,
                 device: torch.device, compile: bool = False, world: SingleProcess | None = None):
        self.world = world or SingleProcess()
        self.world.check_batch(cfg.batch_size)
        self.model, self.cfg, self.device, self.seed = model.to(device), cfg, device, seed
        self.groups = param_groups(model, cfg)
        self.optimizer = make_optimizer(model, self.groups, cfg)
        block, bs, shard = model.config.block_size, cfg.batch_size, (self.world.rank,
                                                                     self.world.size)
        # Separate streams: how often we evaluate never changes which batches we train on.
        self.batches = {
            "train": Batches(corpus.train, block, bs, seed, device.type, shard),
            "eval_train": Batches(corpus.train, block, bs, seed + 1, device.type, shard),
            "eval_val": Batches(corpus.val, block, bs, seed + 2, device.type, shard),
        }
        self.step, self.elapsed, self.tokens_seen = 0, 0.0, 0
        # the highest reading so far (on MPS, where each reading is only the current use)
        self.peak_mem_mb = 0.0
        self.restored_step: int | None = None  # the checkpoint's step: its eval is already recorded
        if device.type == "cuda":
            # fp32 matmuls on tensor cores (bf16 runs do not care)
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        # Static shapes: training and the eval chunks are a few fixed shapes, each compiled once.
        self.forward_eval = torch.compile(model, dynamic=False) if compile else model
        # DDP all-reduces the gradients in backward
        self.forward = self.world.wrap(self.forward_eval)
        self.precision = precision.choose(cfg.dtype, device)
        self.autocast = (
            nullcontext() if self.precision.dtype == "float32"
            else torch.autocast(device.type, dtype=getattr(torch, self.precision.dtype))
        )
        # fp16 only: scale the loss so small gradients do not flush to zero; steps with inf/NaN
        # gradients are skipped (and the scale halved). Disabled, every call passes through. Fused
        # AdamW applies the scale itself, so this adds no device sync to the hot loop.
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.precision.grad_scaler)
        # on the device: read at evaluations, no sync
        self.skipped = torch.zeros((), dtype=torch.long, device=device)

    def checkpoint(self, metrics: dict[str, Any]) -> dict[str, Any]:
        state = {
            "step": self.step, "elapsed": self.elapsed, "tokens_seen": self.tokens_seen,
            "metrics": metrics, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "rng": rng_state(self.batches),
        }
        # fp16: the loss scale it has learned, so a resumed run skips the same steps
        if self.scaler.is_enabled():
            state |= {"scaler": self.scaler.state_dict(), "skipped_steps": int(self.skipped)}
        return state

    def restore(self, ckpt: dict[str, Any]) -> None:
        """Load a checkpoint held on the CPU (RNG states must stay CPU tensors; weights are copied
        to the device)."""
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        if self.scaler.is_enabled() and "scaler" in ckpt:
            self.scaler.load_state_dict(ckpt["scaler"])
            self.skipped.fill_(ckpt["skipped_steps"])
        restore_rng(ckpt["rng"], self.batches)
        self.step, self.elapsed, self.tokens_seen = (ckpt["step"], ckpt["elapsed"],
                                                     ckpt["tokens_seen"])
        self.restored_step = self.step

    def follow_main(self) -> None:
        """Data-parallel: every rank starts from rank 0's state, fresh or restored from its
        checkpoint.

        Sent as checkpoint bytes and loaded on the CPU: unpickled CUDA tensors would land on rank
        0's GPU.
        """
        if self.world.size == 1:
            return
        main = ((checkpoint.serialize(self.checkpoint({})), self.restored_step)
                if self.world.is_main else None)
        state, restored_step = self.world.broadcast(main)
        if not self.world.is_main:
            self.restore(checkpoint.deserialize(state))
            self.restored_step = restored_step  # evaluate where rank 0 does (a fresh run at step 0)

    @torch.inference_mode()
    def estimate_loss(self) -> dict[str, float]:
        """The lecture's estimate_loss: mean loss over eval_iters random batches per split.

        All eval_iters batches are drawn at once and run in forwards of about EVAL_TOKENS: the
        same batches and the same mean (every batch has B x T tokens), without hundreds of tiny,
        overhead-bound forwards.
        """
        self.model.eval()
        out = {}
        rows_total = self.cfg.eval_iters * self.cfg.batch_size
        for split in ("train", "val"):
            x, y = self.batches[f"eval_{split}"].next(self.cfg.eval_iters)
            rows = max(self.cfg.batch_size, EVAL_TOKENS // x.size(1))
            chunks = math.ceil(len(x) / rows)
            loss_sum, z_sum = torch.zeros((), device=self.device), torch.zeros((),
                                                                               device=self.device)
            for xc, yc in zip(x.tensor_split(chunks), y.tensor_split(chunks), strict=True):
                with self.autocast:
                    logits, loss = self.forward_eval(xc, yc)
                loss_sum += loss.float() * len(xc)
                if self.cfg.z_loss:
                    z_sum += log_z_squared(logits) * len(xc)
            out[f"{split}_loss"] = (self.world.sum(loss_sum) / rows_total).item()
            if self.cfg.z_loss:  # the auxiliary term, apart from the cross-entropy it is added to
                out[f"{split}_z_loss"] = self.cfg.z_loss * (
                    self.world.sum(z_sum) / rows_total).item()
        # One batch of validation text, in fp32 and eager: evaluation only, off the training step's
        # path.
        out |= self.model.logit_stats(x[: self.cfg.batch_size])
        self.model.train()
        return out

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the step minimises, and the plain cross-entropy (what is logged): equal unless
        z_loss is on."""
        with self.autocast:
            logits, loss = self.forward(x, y)
        return (loss + self.cfg.z_loss * log_z_squared(logits) if self.cfg.z_loss else loss), loss

    def train_step(self, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step on the next training batch at `lr`: its objective and its loss (not
        synced)."""
        cfg, opt = self.cfg, self.optimizer
        for group, settings in zip(opt.param_groups, self.groups, strict=True):
            group["lr"] = lr * settings.lr_scale
        x, y = self.batches["train"].next()
        objective, loss = self.objective(x, y)
        opt.zero_grad(set_to_none=True)
        self.scaler.scale(objective).backward()
        if cfg.grad_clip > 0:
            self.scaler.unscale_(opt)  # clip the true gradients, not the scaled ones
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        if self.scaler.is_enabled():
            # the scale only drops when the step is skipped for inf grads
            scale = self.scaler._scale.clone()
            self.scaler.step(opt)
            self.scaler.update()
            self.skipped += self.scaler._scale < scale
        else:
            opt.step()
        return objective, loss

    def _peak_memory_mb(self) -> float:
        self.peak_mem_mb = max(self.peak_mem_mb, peak_memory_mb(self.device))
        return self.peak_mem_mb

    def _result(self, status: str, step: int, reason: str | None = None) -> TrainResult:
        return TrainResult(status, step, reason, int(self.skipped))

    def run(self, callbacks: Sequence[Callback] = ()) -> TrainResult:
        cfg, model, world = self.cfg, self.model, self.world
        model.train()
        tokens_per_step = cfg.batch_size * model.config.block_size
        # First non-finite step, tracked on the device so the hot loop never syncs for it.
        first_bad = torch.full((), cfg.max_iters + 1, dtype=torch.long, device=self.device)
        window_start, window_tokens = time.perf_counter(), 0
        while True:
            step = self.step
            at_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
            if step % cfg.log_interval == 0 or at_eval:
                bad = int(world.min(first_bad.clone()).item())  # a log point: syncing here is fine
                if bad <= cfg.max_iters:
                    return self._result("diverged", bad, f"non-finite training loss at step {bad}")
            if at_eval and step != self.restored_step:
                train_time = time.perf_counter() - window_start
                self.elapsed += train_time
                eval_start = time.perf_counter()
                metrics = {"step": step, **self.estimate_loss(), "lr": cfg.lr_at(max(step - 1, 0)),
                           "tokens": self.tokens_seen,
                           "tokens_per_sec": window_tokens / train_time if window_tokens else None,
                           "peak_mem_mb": self._peak_memory_mb()}
                self.elapsed += time.perf_counter() - eval_start
                metrics["elapsed_sec"] = self.elapsed
                stop = None
                try:
                    for cb in callbacks:
                        cb.on_eval(metrics, lambda m=metrics: self.checkpoint(m))
                except StopTraining as e:
                    stop = (e.status, e.reason)
                # data-parallel: rank 0's callbacks decide for every rank
                stop = world.broadcast(stop)
                if stop is not None:
                    return self._result(stop[0], step, stop[1])
                if not (math.isfinite(metrics["train_loss"])
                        and math.isfinite(metrics["val_loss"])):
                    return self._result("diverged", step, f"non-finite eval loss at step {step}")
                window_start, window_tokens = time.perf_counter(), 0
            if at_eval:
                world.reseed(self.seed, step)
            if step >= cfg.max_iters:
                return self._result("completed", step)

            lr = cfg.lr_at(step)
            objective, loss = self.train_step(lr)
            first_bad = torch.where(torch.isfinite(objective) | (first_bad <= step), first_bad,
                                    step)
            self.step += 1
            self.tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            if self.step % cfg.log_interval == 0:
                mean_loss = world.sum(loss.detach().clone()) / world.size
                for cb in callbacks:
                    cb.on_log(self.step, mean_loss.item(), lr)
