"""Train E runs that share a model config as one batched model: each member its own seed, lr and
fate.

A member is built exactly as its lone run builds its model (same seed, same initial weights), draws
exactly the batches its lone run draws (its own generators), and is stepped by an AdamW of its own
scalars (`nanogpt.adamw`); its loss is its own rows' mean, and the ensemble minimises the sum of its
members' losses, whose gradient for each member is that member's own. So without dropout, in fp32, a
member's losses are its lone run's up to float rounding. Dropout draws from one generator for all:
every member gets its own masks, not its lone run's.

A member reports through its own callbacks, as a `nanogpt.train.Trainer` does; the checkpoint it
hands them is the one its lone run would write (its weights, torch's AdamW state dict, its batch
streams), so an interrupted member resumes alone or in an ensemble alike. A member whose loss turns
non-finite is finished `diverged` at that step, one stopped by a callback (`StopTraining`) with its
status: it stops updating and the others go on.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import fields
from typing import Any

import torch
from torch.nn import functional as F

from nanogpt import precision
from nanogpt.adamw import EnsembleAdamW
from nanogpt.config import TrainConfig
from nanogpt.data import Batches, Corpus
from nanogpt.model import GPT
from nanogpt.stack import stack
from nanogpt.train import (
    EVAL_TOKENS,
    Callback,
    StopTraining,
    TrainResult,
    make_optimizer,
    param_groups,
    peak_memory_mb,
    restore_rng,
    rng_state,
)

# The settings each member keeps for itself; it shares the rest (the shapes, the step count, when to
# evaluate).
PER_MEMBER = ("lr", "lr_schedule", "warmup_iters", "min_lr", "lr_decay_iters", "weight_decay",
              "beta1", "beta2", "grad_clip", "z_loss")
SHARED = tuple(f.name for f in fields(TrainConfig) if f.name not in PER_MEMBER)


class EnsembleTrainer:
    """Owns E members' stacked model, optimizer and batch streams; `run()` trains them to max_iters
    together.

    `models[i]` is member i built as its lone run builds it (seeded), `cfgs[i]` and `seeds[i]` its
    settings.
    """

    def __init__(self, models: Sequence[GPT], corpus: Corpus, cfgs: Sequence[TrainConfig],
                 seeds: Sequence[int], device: torch.device):
        for name in SHARED:
            if len({getattr(c, name) for c in cfgs}) > 1:
                raise ValueError(f"an ensemble's members must share {name}")
        self.cfg, self.cfgs, self.seeds, self.device = cfgs[0], list(cfgs), list(seeds), device
        self.size = len(models)
        self.precision = precision.choose(self.cfg.dtype, device)
        if self.precision.grad_scaler:
            raise ValueError("fp16 needs a gradient scaler per member, which an ensemble does not "
                             "have; train these runs alone")
        self.autocast = (nullcontext() if self.precision.dtype == "float32"
                         else torch.autocast(device.type,
                                             dtype=getattr(torch, self.precision.dtype)))
        self.groups = [param_groups(m, c) for m, c in zip(models, cfgs, strict=True)]
        self.model, self.flat = stack([m.to(device) for m in models])
        self.optimizer = EnsembleAdamW(self.flat, self.groups, cfgs)
        # Each member's gradients in its model's parameter order: the order clip_grad_norm_ sums
        # their norms in.
        self.grads = [[self.flat.view(self.flat.grad, i, name) for name in self.flat.shapes]
                      for i in range(self.size)]
        # a lone GPT to hold one member at a time: its checkpoint, its logit stats
        self.scratch = models[0]
        block, bs = self.scratch.config.block_size, self.cfg.batch_size
        self.batches = [{"train": Batches(corpus.train, block, bs, seed, device.type),
                         "eval_train": Batches(corpus.train, block, bs, seed + 1, device.type),
                         "eval_val": Batches(corpus.val, block, bs, seed + 2, device.type)}
                        for seed in seeds]
        self.z_loss = torch.tensor([c.z_loss for c in cfgs], device=device)
        self.step, self.elapsed, self.tokens_seen = 0, 0.0, 0
        self.restored_step: int | None = None
        self.results: list[TrainResult | None] = [None] * self.size

    # --- one member at a time: what its lone run would hold ---------------------------------------

    def _load_scratch(self, i: int) -> None:
        member = self.flat.member(i)
        with torch.no_grad():
            for name, p in self.scratch.named_parameters():
                p.copy_(member[name])

    def checkpoint(self, i: int, metrics: dict[str, Any]) -> dict[str, Any]:
        """Member i's checkpoint, as its lone run's `Trainer.checkpoint` writes it."""
        self._load_scratch(i)
        optimizer = make_optimizer(self.scratch, self.groups[i], self.cfgs[i])
        named = dict(self.scratch.named_parameters())
        moments = self.optimizer.member_state(i)
        for name, p in named.items():
            optimizer.state[p] = {k: v.detach().clone() for k, v in moments[name].items()}
        for group, settings in zip(optimizer.param_groups, self.groups[i], strict=True):
            group["lr"] = self.cfgs[i].lr_at(max(self.step - 1, 0)) * settings.lr_scale
        return {"step": self.step, "elapsed": self.elapsed, "tokens_seen": self.tokens_seen,
                "metrics": metrics,
                "model": {k: v.clone() for k, v in self.scratch.state_dict().items()},
                "optimizer": optimizer.state_dict(), "rng": rng_state(self.batches[i])}

    def restore(self, ckpts: Sequence[dict[str, Any]]) -> None:
        """Every member from its own checkpoint, all at one step (on the CPU, as `checkpoint.load`
        gives them)."""
        steps = {c["step"] for c in ckpts}
        if len(steps) > 1:
            raise ValueError(f"an ensemble resumes its members from one step, not {sorted(steps)}")
        for i, ckpt in enumerate(ckpts):
            self.scratch.load_state_dict(ckpt["model"])
            member = self.flat.member(i)
            with torch.no_grad():
                for name, p in self.scratch.named_parameters():
                    member[name].copy_(p)
            # torch numbers parameters this way
            order = [name for g in self.groups[i] for name in g.names]
            state = ckpt["optimizer"]["state"]
            self.optimizer.load_member(i, {order[k]: v for k, v in state.items()})
            # the global RNG (dropout) is the ensemble's: the same in all
            restore_rng(ckpt["rng"], self.batches[i])
        self.step = steps.pop()
        self.elapsed = max(c["elapsed"] for c in ckpts)
        self.tokens_seen = ckpts[0]["tokens_seen"]
        self.restored_step = self.step

    # --- all members at once ----------------------------------------------------------------------

    def losses(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's mean cross-entropy over its rows of (E*B, T) x, y, and its logits: ((E,),
        (E*B, T, V))."""
        with self.autocast:
            logits, _ = self.model(x)
        # cross_entropy is log_softmax, row by row, then the mean of each member's rows: one mean
        # per member, so that it sums its rows in the order its lone run sums them.
        log_probs = F.log_softmax(logits.reshape(-1, logits.size(-1)).float(), dim=-1)
        loss = [F.nll_loss(lp, yi) for lp, yi in zip(log_probs.chunk(self.size),
                                                     y.reshape(-1).chunk(self.size),
                                                      strict=True)]
        return torch.stack(loss), logits

    def objective(self, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Each member's training objective (its loss, plus its z-loss if it has one) and its plain
        loss."""
        loss, logits = self.losses(x, y)
        if not self.z_loss.any():
            return loss, loss
        z = torch.logsumexp(logits.float(), dim=-1).pow(2).view(self.size, -1).mean(1)
        return loss + self.z_loss * z, loss

    def _next(self, stream: str, n: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
        """Every member's next n batches from its own stream, member-major: (E * n * B, T) each."""
        streams = [b[stream] for b in self.batches]
        # one split, one gather for all
        return streams[0].gather(torch.cat([s.draw(n) for s in streams]))

    @torch.inference_mode()
    def estimate_loss(self) -> list[dict[str, float]]:
        """Each member's `Trainer.estimate_loss`: the same batches, chunks of the same rows, one
        forward each."""
        self.model.eval()
        out: list[dict[str, float]] = [{} for _ in range(self.size)]
        rows_total = self.cfg.eval_iters * self.cfg.batch_size
        for split in ("train", "val"):
            x, y = (t.view(self.size, -1, t.size(-1))
                    for t in self._next(f"eval_{split}", self.cfg.eval_iters))
            rows = max(self.cfg.batch_size, EVAL_TOKENS // x.size(-1))
            chunks = math.ceil(x.size(1) / rows)
            loss_sum = torch.zeros(self.size, device=self.device)
            z_sum = torch.zeros(self.size, device=self.device)
            for xc, yc in zip(x.tensor_split(chunks, dim=1), y.tensor_split(chunks, dim=1),
                              strict=True):
                loss, logits = self.losses(xc.reshape(-1, xc.size(-1)), yc.reshape(-1, yc.size(-1)))
                loss_sum += loss * xc.size(1)
                if self.z_loss.any():
                    z_sum += torch.logsumexp(logits.float(),
                                             dim=-1).pow(2).view(self.size, -1).mean(1) * xc.size(1)
            for i, (loss_i, z_i) in enumerate(zip((loss_sum / rows_total).tolist(),
                                                  (z_sum / rows_total).tolist(), strict=True)):
                out[i][f"{split}_loss"] = loss_i
                if self.cfgs[i].z_loss:
                    out[i][f"{split}_z_loss"] = self.cfgs[i].z_loss * z_i
        # each member's logit stats on its own first validation batch, as alone
        for i in range(self.size):
            self._load_scratch(i)
            out[i] |= self.scratch.logit_stats(x[i, : self.cfg.batch_size])
        self.model.train()
        return out

    def _clip(self, members: Sequence[int]) -> None:
        """Each member's gradient clipped to its own norm, computed as `clip_grad_norm_` computes
        its lone run's."""
        for i in members:
            max_norm = self.cfgs[i].grad_clip
            if max_norm > 0:
                grads = self.grads[i]
                norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
                torch._foreach_mul_(grads, (max_norm / (norm + 1e-6)).clamp(max=1.0))

    def _finish(self, i: int, status: str, step: int, reason: str | None = None) -> None:
        if self.results[i] is None:
            self.results[i] = TrainResult(status, step, reason)
            self.on_finish(i, self.results[i])

    def member_model(self, i: int) -> GPT:
        """A lone GPT holding member i's weights now (valid until the next call: it is reused)."""
        self._load_scratch(i)
        return self.scratch

    def run(self, callbacks: Sequence[Sequence[Callback]],
            on_finish: Callable[[int,
                                 TrainResult], None] = lambda i, result: None) -> list[TrainResult]:
        """Train to max_iters; `callbacks[i]` are member i's. `on_finish(i, result)` is called as
        member i ends (diverged or stopped mid-run, completed at the end). Returns every member's
        result."""
        cfg = self.cfg
        self.on_finish = on_finish
        self.model.train()
        tokens_per_step = cfg.batch_size * self.scratch.config.block_size
        first_bad = torch.full((self.size,), cfg.max_iters + 1, dtype=torch.long,
                               device=self.device)
        window_start, window_tokens = time.perf_counter(), 0
        while True:
            step = self.step
            at_eval = step % cfg.eval_interval == 0 or step == cfg.max_iters
            if step % cfg.log_interval == 0 or at_eval:
                for i, bad in enumerate(first_bad.tolist()):  # a log point: syncing here is fine
                    if bad <= cfg.max_iters:
                        self._finish(i, "diverged", bad, f"non-finite training loss at step {bad}")
            if at_eval and step != self.restored_step:
                self._evaluate(callbacks, time.perf_counter() - window_start, window_tokens)
                window_start, window_tokens = time.perf_counter(), 0
            live = [i for i, r in enumerate(self.results) if r is None]
            if step >= cfg.max_iters or not live:
                for i in range(self.size):
                    self._finish(i, "completed", step)
                return [r for r in self.results if r is not None]  # all of them by now

            objective, loss = self.train_step([c.lr_at(step) for c in self.cfgs], live)
            first_bad = torch.where(torch.isfinite(objective) | (first_bad <= step), first_bad,
                                    step)
            self.step += 1
            self.tokens_seen += tokens_per_step
            window_tokens += tokens_per_step
            if self.step % cfg.log_interval == 0:
                for i, loss_i in enumerate(loss.tolist()):
                    if self.results[i] is None:
                        for cb in callbacks[i]:
                            cb.on_log(self.step, loss_i, self.cfgs[i].lr_at(step))

    def train_step(self, lrs: Sequence[float],
                   live: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """One step of every member on its next batch, the `live` ones updated, member i at
        `lrs[i]`: the members' objectives and losses, (E,) each (not synced)."""
        objective, loss = self.objective(*self._next("train"))
        self.flat.grad.zero_()
        objective.sum().backward()
        self._clip(live)
        self.optimizer.step(lrs, live)
        return objective, loss

    def _evaluate(self, callbacks: Sequence[Sequence[Callback]], train_time: float,
                  window_tokens: int) -> None:
        """Evaluate every live member and hand each its metrics; finish those that stop or diverge
        here."""
        step = self.step
        self.elapsed += train_time
        eval_start = time.perf_counter()
        measured = self.estimate_loss()
        peak = peak_memory_mb(self.device)
        self.elapsed += time.perf_counter() - eval_start
        for i, values in enumerate(measured):
            if self.results[i] is not None:
                continue
            metrics = {"step": step, **values, "lr": self.cfgs[i].lr_at(max(step - 1, 0)),
                       "tokens": self.tokens_seen,
                       "tokens_per_sec": window_tokens / train_time if window_tokens else None,
                       "peak_mem_mb": peak, "elapsed_sec": self.elapsed}
            state: Callable[[], dict[str, Any]] = lambda i=i, m=metrics: self.checkpoint(i, m)  # noqa: E731
            try:
                for cb in callbacks[i]:
                    cb.on_eval(metrics, state)
            except StopTraining as e:
                self._finish(i, e.status, step, e.reason)
                continue
            if not (math.isfinite(metrics["train_loss"]) and math.isfinite(metrics["val_loss"])):
                self._finish(i, "diverged", step, f"non-finite eval loss at step {step}")
