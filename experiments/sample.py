"""Print text from a recorded run: `python -m experiments.sample RUN_DIR`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import torch

from experiments import store
from experiments.config import RunConfig
from nanogpt import checkpoint
from nanogpt.data import CharTokenizer
from nanogpt.model import GPT


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.sample", description=__doc__)
    p.add_argument("run_dir", help="a run folder (results/<experiment>/<run_id>)")
    p.add_argument("--tokens", type=int, default=500, help="characters to generate (default 500)")
    p.add_argument("--temperature", type=float, default=1.0, help="softmax temperature (default 1.0)")
    p.add_argument("--top-k", type=int, default=None, help="sample only from the k likeliest characters")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--prompt", default="\n", help="text to continue (default a newline)")
    args = p.parse_args(argv)
    run = store.RunStore(".")
    try:
        from pathlib import Path

        record = run.read(Path(args.run_dir))
        tokenizer = CharTokenizer.from_json((Path(args.run_dir) / store.VOCAB).read_text(encoding="utf-8"))
        cfg = RunConfig.from_flat(record.config)
        state = checkpoint.load(Path(args.run_dir) / store.CHECKPOINT)
        unknown = sorted(set(args.prompt) - set(tokenizer.chars))
        if unknown:
            raise ValueError(f"prompt has characters outside the run's vocabulary: {''.join(unknown)!r}")
    except (ValueError, OSError, checkpoint.CheckpointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    model = GPT(cfg.model)
    model.load_state_dict(state["model"])
    model.eval()
    idx = torch.tensor([tokenizer.encode(args.prompt)], dtype=torch.long)
    out = model.generate(idx, args.tokens, args.temperature, args.top_k,
                         generator=torch.Generator().manual_seed(args.seed))
    print(args.prompt + tokenizer.decode(out[0, idx.size(1):].tolist()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
