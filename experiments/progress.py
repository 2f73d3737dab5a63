"""Progress for one run: a tqdm bar on a terminal, plain log lines otherwise (CI, files, pipes)."""

from __future__ import annotations

import sys
from typing import Any

from tqdm import tqdm

from nanogpt.train import Callback


class Progress(Callback):
    def __init__(self, label: str, total: int, start: int = 0, quiet: bool = False):
        self.label, self.quiet = label, quiet
        self.bar = tqdm(total=total, initial=start, desc=label, unit="it", dynamic_ncols=True,
                        disable=quiet or not sys.stderr.isatty())
        self.step = start

    def on_log(self, step: int, loss: float, lr: float) -> None:
        self.bar.update(step - self.step)
        self.step = step
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{lr:.2e}")

    def on_eval(self, metrics: dict[str, Any], checkpoint_state) -> None:
        self.bar.update(metrics["step"] - self.step)
        self.step = metrics["step"]
        line = (f"{self.label} step {metrics['step']}: train {metrics['train_loss']:.4f} "
                f"val {metrics['val_loss']:.4f}")
        if metrics.get("tokens_per_sec"):
            line += f" ({metrics['tokens_per_sec']:,.0f} tok/s)"
        if self.bar.disable:
            if not self.quiet:
                print(line, file=sys.stderr, flush=True)
        else:
            self.bar.write(line, file=sys.stderr)

    def close(self) -> None:
        self.bar.close()
