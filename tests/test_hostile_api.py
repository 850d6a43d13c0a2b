"""A hostile user's sweep of the GPT, toy-model, hook and schedule API (issue 13): every call here
is wrong in one way, and each must end in a clear error — a ValueError (or TypeError for a
wrong kind of object, FileNotFoundError for a missing path) whose message names the argument
and the value — never a raw torch error, a NaN or an empty result. Unit tier."""

from __future__ import annotations

import pytest
import torch

from superpose import gpt, hooks, toy
from superpose.gpt.heads import induction_scores_from, prev_token_scores_from

NAN, INF = float("nan"), float("inf")


def _gpt():
    return gpt.GPT(gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=8, n_heads=2, n_ctx=8),
                   device="cpu")


def _toy():
    return toy.ToyModel(toy.ToyConfig(n_features=5, n_hidden=2, n_instances=3), device="cpu")


TOK = torch.randint(0, 11, (2, 8), generator=torch.Generator().manual_seed(0))
DATA = gpt.TokenDataset(torch.arange(200) % 11, 8)
PATTERN = torch.rand(1, 2, 2, 8, 8).softmax(-1)

CASES = {
    # GPT forward and generation
    "forward float tokens": (lambda: _gpt()(TOK.float()), r"tokens must hold integer token ids"),
    "forward 3-d tokens": (lambda: _gpt()(TOK[None]), r"tokens must have shape \[batch, pos\]"),
    "forward no positions": (lambda: _gpt()(TOK[:, :0]), r"got \[2, 0\]"),
    "forward no rows": (lambda: _gpt()(TOK[:0]), r"got \[0, 8\]"),
    "forward negative ids": (lambda: _gpt()(TOK - 20), r"must lie in \[0, d_vocab=11\)"),
    "forward ids past vocab": (lambda: _gpt()(TOK + 20), r"must lie in \[0, d_vocab=11\)"),
    "forward longer than n_ctx": (lambda: _gpt()(torch.zeros(1, 9, dtype=torch.long)),
                                  r"exceeds the model's context n_ctx=8"),
    "generate negative count": (lambda: _gpt().generate(TOK[:, :3], max_new_tokens=-1),
                                r"max_new_tokens must be a non-negative integer, got -1"),
    "generate NaN temperature": (lambda: _gpt().generate(TOK[:, :3], max_new_tokens=2,
                                                         temperature=NAN),
                                 r"temperature must be a non-negative finite number, got nan"),
    "generate inf temperature": (lambda: _gpt().generate(TOK[:, :3], max_new_tokens=2,
                                                         temperature=INF),
                                 r"temperature must be .* finite number, got inf"),
    "generate top_k 0": (lambda: _gpt().generate(TOK[:, :3], max_new_tokens=2, top_k=0),
                         r"top_k must be a positive integer, got 0"),
    "generate text": (lambda: _gpt().generate("hello", max_new_tokens=2),
                      r"tokens must be a torch\.Tensor of token ids, got str"),
    # losses
    "loss targets past vocab": (lambda: gpt.next_token_loss(_gpt()(TOK), TOK + 50),
                                r"next_token_loss: target token ids"),
    "per-token loss wrong shape": (lambda: gpt.per_token_loss(_gpt()(TOK), TOK[:, :3]),
                                   r"per_token_loss needs logits \[batch, pos, d_vocab\]"),
    # data
    "dataset n_ctx 0": (lambda: gpt.TokenDataset(torch.arange(100), 0),
                        r"n_ctx must be a positive integer, got 0"),
    "dataset too short": (lambda: gpt.TokenDataset(torch.arange(5), 8),
                          r"need at least n_ctx \+ 1 = 9 tokens"),
    "dataset float tokens": (lambda: gpt.TokenDataset(torch.arange(100).float(), 8),
                             r"tokens must be a 1-D integer tensor"),
    "dataset 2-d tokens": (lambda: gpt.TokenDataset(torch.arange(100).view(10, 10), 8),
                           r"tokens must be a 1-D integer tensor"),
    "dataset negative ids": (lambda: gpt.TokenDataset(torch.arange(100) - 50, 8),
                             r"tokens must be token ids >= 0, got -50"),
    "repeated_tokens negative": (lambda: gpt.repeated_tokens(11, -1, 2),
                                 r"seq_len must be a positive integer, got -1"),
    "Dyck odd length": (lambda: gpt.Dyck(length=7), r"length must be even"),
    "Dyck NaN p_open": (lambda: gpt.Dyck(p_open=NAN), r"p_open must lie in \(0, 1\), got nan"),
    "corpus unknown": (lambda: gpt.load_corpus("nope"), r"name must be one of \['stdlib'"),
    "text files none": (lambda: gpt.load_text_files([]), r"needs at least one path"),
    # head scores
    "induction NaN seq_len": (lambda: gpt.induction_scores(_gpt(), seq_len=NAN, d_vocab=11),
                              r"seq_len must be a positive integer, got nan"),
    "induction pattern 4-d": (lambda: induction_scores_from(PATTERN[0], 3, 3),
                              r"pattern must be \[layer, batch, head, pos, pos\]"),
    "induction copy_start past end": (lambda: induction_scores_from(PATTERN, 3, 8),
                                      r"copy_start must be in \[repeat - 1, pos\)"),
    "prev-token float tokens": (lambda: gpt.prev_token_scores(_gpt(), TOK.float()),
                                r"tokens must be an integer tensor"),
    "patterns ids past vocab": (lambda: gpt.attention_patterns(_gpt(), TOK + 50),
                                r"must lie in \[0, d_vocab=11\)"),
    # training and evaluation
    "evaluate 0 batches": (lambda: gpt.evaluate(_gpt(), DATA, n_batches=0, batch_size=2),
                           r"n_batches must be a positive integer, got 0"),
    "evaluate NaN batch size": (lambda: gpt.evaluate(_gpt(), DATA, n_batches=1,
                                                     batch_size=NAN),
                                r"batch_size must be a positive integer, got nan"),
    "train 0 steps": (lambda: gpt.train(_gpt(), DATA, steps=0, progress=False),
                      r"steps must be a positive integer, got 0"),
    "train inf lr": (lambda: gpt.train(_gpt(), DATA, steps=1, lr=INF, progress=False),
                     r"lr must be .*finite.*got inf"),
    "train no data": (lambda: gpt.train(_gpt(), [], steps=2, batch_size=2, progress=False),
                      r"data ran out after 0 batches"),
    "train windows longer than n_ctx": (
        lambda: gpt.train(_gpt(), gpt.TokenDataset(torch.arange(100) % 11, 16), steps=2,
                          batch_size=2, progress=False),
        r"sequence length 16 exceeds the model's context n_ctx=8"),
    "train targets of another shape": (
        lambda: gpt.train(_gpt(), [(TOK, TOK[:, :3])], steps=1, batch_size=2, progress=False),
        r"data batch 0: x and y must be integer token tensors of one shape"),
    "load a missing folder": (lambda: gpt.GPT.load("/nonexistent/model"),
                              r"/nonexistent/model is not a folder; expected a saved GPT"),
    "rotary with odd d_head": (lambda: gpt.GPTConfig(d_vocab=11, n_layers=1, d_model=9,
                                                     n_heads=3, n_ctx=8, positional="rotary"),
                               r"d_head must be even, got d_head=3"),
    "hook name with a typo": (lambda: _gpt().run_with_cache(TOK, names_filter="blocks.0.hook_z"),
                              r"no hook point named 'blocks\.0\.hook_z'; close matches"),
    # toy models
    "toy NaN importance": (lambda: toy.ToyConfig(n_features=5, n_hidden=2, importance=NAN),
                           r"importance must be a non-negative finite number"),
    "toy importance of the wrong length": (
        lambda: toy.ToyConfig(n_features=5, n_hidden=2, importance=[1, 1]),
        r"importance given as a flat list must have n_features=5 entries, got 2"),
    "toy probability 0": (lambda: toy.ToyConfig(n_features=5, n_hidden=2,
                                                feature_probability=0.0),
                          r"feature_probability must be a finite number in \(0, 1\]"),
    "toy probability NaN": (lambda: toy.ToyConfig(n_features=5, n_hidden=2,
                                                  feature_probability=NAN),
                            r"feature_probability must be a finite number in \(0, 1\]"),
    "toy input of the wrong shape": (lambda: _toy()(torch.rand(4, 5)),
                                     r"expects input of shape \[batch, n_instances=3"),
    "toy int input": (lambda: _toy()(torch.ones(4, 3, 5, dtype=torch.long)),
                      r"input must have the weights' dtype torch\.float32"),
    "toy float64 input": (lambda: _toy()(torch.rand(4, 3, 5, dtype=torch.float64)),
                          r"input must have the weights' dtype"),
    "toy batch size 0": (lambda: toy.generate_batch(_toy().cfg, 0),
                         r"batch_size must be a positive integer, got 0"),
    "toy seed negative": (lambda: toy.make_generator(-1),
                          r"seed must be a non-negative integer, got -1"),
    "toy NaN data": (lambda: toy.train(_toy(), steps=2, data=[torch.full((4, 3, 5), NAN)] * 2,
                                       progress=False),
                     r"batch 0 contains NaN or inf"),
    "toy inf data": (lambda: toy.train(_toy(), steps=2, data=[torch.full((4, 3, 5), INF)] * 2,
                                       progress=False),
                     r"batch 0 contains NaN or inf"),
    "toy lr that diverges": (lambda: toy.train(_toy(), steps=50, lr=1e30, progress=False),
                             r"training loss of instance\(s\) \[0, 1, 2\] became nan"),
    "toy unknown hook": (lambda: hooks.capture(_toy(), ["hook_nope"], torch.rand(4, 3, 5)),
                         r"this ToyModel has no hook point named 'hook_nope'"),
    "toy load a missing folder": (lambda: toy.ToyModel.load("/nonexistent/toy"),
                                  r"expected a saved ToyModel"),
    "schedule negative step": (lambda: toy.lr_at(-1, toy.TrainConfig()),
                               r"step must be a non-negative integer, got -1"),
    "prev-token pattern 3-d": (lambda: prev_token_scores_from(PATTERN[0, 0]),
                               r"pattern must be \[layer, batch, head, pos, pos\] with pos >= 2"),
    "prev-token NaN pattern": (lambda: prev_token_scores_from(PATTERN * NAN),
                               r"pattern contains NaN or inf \(first at index \[0, 0, 0, 0, 0\]"),
    "induction NaN pattern": (lambda: induction_scores_from(PATTERN * NAN, 3, 3),
                              r"pattern contains NaN or inf"),
}


@pytest.mark.parametrize("name", list(CASES))
def test_a_wrong_call_gets_a_clear_error(name, user_errors):
    call, message = CASES[name]
    with pytest.raises((ValueError, TypeError, FileNotFoundError, FloatingPointError),
                       match=message):
        call()
