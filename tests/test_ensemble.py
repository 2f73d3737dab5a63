"""The batched ensemble: each member computes its lone run, steps with torch's AdamW, and meets its
own fate."""

from __future__ import annotations

import dataclasses
import random

import pytest
import torch

from experiments.config import resolve
from nanogpt.adamw import EnsembleAdamW
from nanogpt.checkpoint import deserialize, serialize
from nanogpt.config import ModelConfig, TrainConfig
from nanogpt.data import Corpus
from nanogpt.ensemble import EnsembleTrainer
from nanogpt.model import GPT
from nanogpt.stack import stack
from nanogpt.train import Callback, Trainer, make_optimizer, param_groups

CPU = torch.device("cpu")


class Losses(Callback):
    """Every logged training loss, every evaluation and its checkpoint."""

    def __init__(self):
        self.train, self.evals, self.checkpoints = [], [], {}

    def on_log(self, step, loss, lr):
        self.train.append(loss)

    def on_eval(self, metrics, checkpoint):
        self.evals.append((metrics["step"], metrics["train_loss"], metrics["val_loss"],
                           metrics["max_attn_logit"], metrics["max_output_logit"]))
        # as written then, not as trained on
        self.checkpoints[metrics["step"]] = deserialize(serialize(checkpoint()))


def seeded(model: ModelConfig, seed: int) -> GPT:
    random.seed(seed)
    torch.manual_seed(seed)
    return GPT(model)


def lone(model: ModelConfig, corpus: Corpus, train: TrainConfig, seed: int) -> Losses:
    losses = Losses()
    Trainer(seeded(model, seed), corpus, train, seed, CPU).run([losses])
    return losses


def together(model: ModelConfig, corpus: Corpus, trains: list[TrainConfig], seeds: list[int]
             ) -> tuple[list[Losses], EnsembleTrainer, list]:
    losses = [Losses() for _ in seeds]
    trainer = EnsembleTrainer([seeded(model, s) for s in seeds], corpus, trains, seeds, CPU)
    results = trainer.run([[m] for m in losses])
    return losses, trainer, results


def relative(a: list[float], b: list[float]) -> float:
    return max(abs(x - y) / abs(x) for x, y in zip(a, b, strict=True))


@pytest.fixture(scope="module")
def shakespeare_corpus(shakespeare) -> Corpus:
    return Corpus.load(str(shakespeare))


def test_a_member_trains_as_its_lone_run_for_200_steps(shakespeare_corpus):
    """The tutorial model, fp32, no dropout: each member's every training loss and evaluation equals
    its lone run's (same seed, same lr) to 1e-5 relative, as the issue asks; here they agree to the
    bit."""
    model = dataclasses.replace(resolve("tutorial").model,
                                vocab_size=shakespeare_corpus.tokenizer.vocab_size)
    train = dataclasses.replace(resolve("tutorial").train, max_iters=200, eval_interval=100,
                                eval_iters=4, log_interval=1)
    trains = [dataclasses.replace(train, lr=lr) for lr in (1e-3, 3e-3, 1e-2)]
    members, _, results = together(model, shakespeare_corpus, trains, [0, 1, 2])
    assert [r.status for r in results] == ["completed"] * 3
    for seed, (cfg, member) in enumerate(zip(trains, members, strict=True)):
        alone = lone(model, shakespeare_corpus, cfg, seed)
        assert len(member.train) == 200 and relative(alone.train, member.train) <= 1e-5
        assert member.evals == alone.evals  # evaluation, attention and output logits too
        assert member.train == alone.train  # stronger than asked: the very same floats


# Every switch that changes a layer the stack replaces, with clipping, a schedule, weight decay and
# z-loss.
ARCHITECTURES = {
    "bigram": dict(lm_head=False, pos_emb=False, attention=False, mlp=False, n_layer=0),
    "plain post-norm": dict(residual=False, norm_position="post", bias=False),
    "llama-like": dict(norm="rmsnorm", activation="swiglu", rope=True, pos_emb=False, qk_norm=True,
                       n_kv_head=1, weight_tying=True, scaled_residual_init=True),
    "qk-layernorm, gelu, default init": dict(qk_norm=True, activation="gelu", init="default",
                                             bias=False),
    "muP at twice its base width": dict(parametrization="mup", mup_base_width=8, weight_tying=True),
}


@pytest.mark.parametrize("changes", ARCHITECTURES.values(), ids=ARCHITECTURES)
def test_every_switch_stacks_to_the_bit(tiny_corpus, changes):
    corpus = Corpus.load(str(tiny_corpus))
    model = ModelConfig(**{"vocab_size": corpus.tokenizer.vocab_size, "block_size": 8, "n_embd": 16,
                           "n_head": 2, "n_layer": 2} | changes)
    base = TrainConfig(batch_size=4, max_iters=24, eval_interval=12, eval_iters=2, log_interval=1,
                       lr=1e-2)
    trains = [dataclasses.replace(base, grad_clip=0.5, weight_decay=0.1, beta2=0.95),
              dataclasses.replace(base, lr=3e-3, lr_schedule="cosine", warmup_iters=5, min_lr=1e-4,
                                  z_loss=1e-4)]
    members, _, _ = together(model, corpus, trains, [3, 4])
    for seed, cfg, member in zip([3, 4], trains, members, strict=True):
        alone = lone(model, corpus, cfg, seed)
        assert member.train == alone.train and member.evals == alone.evals


def test_the_per_member_adamw_is_torchs_adamw_for_each_member():
    """Same weights and gradients: each member's step equals torch.optim.AdamW's (fused, as the lone
    trainer runs it) to the bit, and the per-tensor reference implementation to rounding, with its
    own lr, betas and decay."""
    model = ModelConfig(block_size=8, n_embd=16, n_head=2, n_layer=1)
    cfgs = [TrainConfig(lr=1e-3, weight_decay=0.01), TrainConfig(lr=2e-2, beta1=0.8, beta2=0.95,
                                                                 weight_decay=0.3)]
    members = [seeded(model, s) for s in (0, 1)]
    fused = [seeded(model, s) for s in (0, 1)]
    plain = [seeded(model, s) for s in (0, 1)]
    torch_adamw = [make_optimizer(m, param_groups(m, c), c) for m,
                   c in zip(fused, cfgs, strict=True)]
    reference = [torch.optim.AdamW([{"params": [dict(m.named_parameters())[n] for n in g.names],
                                     "weight_decay": g.weight_decay} for g in param_groups(m, c)],
                                   lr=c.lr, betas=(c.beta1, c.beta2), foreach=False)
                 for m, c in zip(plain, cfgs, strict=True)]
    _, flat = stack(members)
    ours = EnsembleAdamW(flat, [param_groups(m, c) for m, c in zip(members, cfgs, strict=True)],
                         cfgs)
    generator = torch.Generator().manual_seed(0)
    for _ in range(5):
        for i in range(2):
            for name, p in fused[i].named_parameters():
                grad = torch.randn(p.shape, generator=generator) * 10 ** -torch.randint(1, 6,
                                                                                        ()).item()
                p.grad = grad
                dict(plain[i].named_parameters())[name].grad = grad.clone()
                flat.view(flat.grad, i, name).copy_(grad)
            torch_adamw[i].step()
            reference[i].step()
        ours.step([c.lr for c in cfgs], [0, 1])
    for i in range(2):
        for name, p in fused[i].named_parameters():
            assert torch.equal(flat.member(i)[name], p.detach()), name
            torch.testing.assert_close(flat.member(i)[name],
                                       dict(plain[i].named_parameters())[name].detach())
        state = ours.member_state(i)
        for name, p in fused[i].named_parameters():
            assert torch.equal(state[name]["exp_avg_sq"], torch_adamw[i].state[p]["exp_avg_sq"])


@pytest.mark.reliability("fault", "one member of an ensemble diverges (lr 1e9)")
def test_a_diverging_member_is_recorded_diverged_and_the_others_train_on_unchanged(tiny_corpus):
    corpus = Corpus.load(str(tiny_corpus))
    model = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=8, n_embd=16, n_head=2,
                        n_layer=2)
    base = TrainConfig(batch_size=4, max_iters=60, eval_interval=20, eval_iters=2, log_interval=5,
                       lr=1e-2)
    trains = [base, dataclasses.replace(base, lr=1e9), dataclasses.replace(base, lr=3e-3)]
    members, trainer, results = together(model, corpus, trains, [0, 1, 2])
    assert (results[1].status == "diverged" and results[1].step < 60 and "non-finite"
            in results[1].reason)
    assert [results[0].status, results[2].status] == ["completed", "completed"]
    assert all(len(m.evals) == 4 for m in (members[0], members[2])) and len(members[1].evals) < 4
    for i in (0, 2):  # as if the diverging member had never been there
        alone = lone(model, corpus, trains[i], i)
        assert members[i].train == alone.train and members[i].evals == alone.evals


def test_a_members_checkpoint_is_its_lone_runs_and_resumes_it_alone(tiny_corpus):
    """What a member hands its callbacks at an evaluation equals the lone run's checkpoint there
    (weights, torch's AdamW state, batch streams), and a lone Trainer resumed from it ends on the
    lone run's numbers."""
    corpus = Corpus.load(str(tiny_corpus))
    model = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=8, n_embd=16, n_head=2,
                        n_layer=2)
    train = TrainConfig(batch_size=4, max_iters=40, eval_interval=20, eval_iters=2, log_interval=5,
                        lr=1e-2, grad_clip=1.0)
    members, _, _ = together(model, corpus, [train, dataclasses.replace(train, lr=3e-3)], [5, 6])
    alone = lone(model, corpus, train, 5)
    ours, theirs = members[0].checkpoints[20], alone.checkpoints[20]
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours["model"][k], v) for k, v in theirs["model"].items())
    assert ours["optimizer"]["param_groups"] == theirs["optimizer"]["param_groups"]
    for index, state in theirs["optimizer"]["state"].items():
        assert all(torch.equal(ours["optimizer"]["state"][index][k], v) for k, v in state.items())
    assert all(torch.equal(ours["rng"][k], theirs["rng"][k])
               for k in ("batches_train", "batches_eval_val"))
    resumed = Losses()
    trainer = Trainer(seeded(model, 5), corpus, train, 5, CPU)
    trainer.restore(ours)
    trainer.run([resumed])
    assert resumed.evals == alone.evals[-1:]


@pytest.mark.reliability("fault",
                         "an ensemble stopped mid-run, resumed from its members' checkpoints")
def test_a_killed_ensemble_resumes_from_its_members_checkpoints_exactly(tiny_corpus):
    corpus = Corpus.load(str(tiny_corpus))
    model = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=8, n_embd=16, n_head=2,
                        n_layer=1)
    train = TrainConfig(batch_size=4, max_iters=40, eval_interval=10, eval_iters=2, log_interval=5,
                        lr=1e-2)
    trains, seeds = [train, dataclasses.replace(train, lr=2e-3)], [0, 1]
    whole, _, _ = together(model, corpus, trains, seeds)
    resumed = [Losses(), Losses()]
    trainer = EnsembleTrainer([seeded(model, s) for s in seeds], corpus, trains, seeds, CPU)
    trainer.restore([whole[0].checkpoints[20], whole[1].checkpoints[20]])
    trainer.run([[m] for m in resumed])
    for before, after in zip(whole, resumed, strict=True):
        assert after.evals == before.evals[3:]
        assert all(torch.equal(after_w, before_w) for after_w, before_w in
                   zip(after.checkpoints[40]["model"].values(),
                       before.checkpoints[40]["model"].values(), strict=True))


def test_with_dropout_each_member_draws_its_own_masks(tiny_corpus):
    corpus = Corpus.load(str(tiny_corpus))
    model = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=8, n_embd=16, n_head=2,
                        n_layer=1, dropout=0.2)
    train = TrainConfig(batch_size=4, max_iters=10, eval_interval=10, eval_iters=2, log_interval=1)
    # one seed twice: the same weights, batches
    twins, _, results = together(model, corpus, [train, train], [0, 0])
    assert [r.status for r in results] == ["completed"] * 2
    assert twins[0].train[0] != twins[1].train[0]  # ... but not the same dropout masks


def test_members_must_share_what_fixes_the_shapes_and_fp16_trains_alone(tiny_corpus):
    corpus = Corpus.load(str(tiny_corpus))
    model = ModelConfig(vocab_size=corpus.tokenizer.vocab_size, block_size=8, n_embd=16, n_head=2,
                        n_layer=1)
    models = [seeded(model, 0), seeded(model, 1)]
    with pytest.raises(ValueError, match="must share batch_size"):
        EnsembleTrainer(models, corpus, [TrainConfig(), TrainConfig(batch_size=8)], [0, 1], CPU)
    with pytest.raises(ValueError, match="must share one model config"):
        EnsembleTrainer([models[0], seeded(dataclasses.replace(model, n_layer=2), 1)], corpus,
                        [TrainConfig(), TrainConfig()], [0, 1], CPU)
    with pytest.raises(ValueError, match="gradient scaler"):
        EnsembleTrainer(models, corpus, [TrainConfig(dtype="float16")] * 2, [0, 1], CPU)
