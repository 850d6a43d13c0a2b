"""transformer.train_mlm / train_seq2seq on the shared training core: they learn (the loss
falls well below its start on held-out batches), record the history every trainer records,
and refuse a task or tokenizer that does not fit the model."""

from __future__ import annotations

import math

import pytest
import torch

from superpose import gpt, transformer
from superpose.transformer import data, tasks
from superpose.transformer.training import TrainConfig, mlm_batches, seq2seq_loss


def _s2s_for(task: tasks.Seq2SeqTask, **kw) -> transformer.Seq2Seq:
    tok = task.tgt_tokenizer
    sizes = dict(d_vocab=task.src_vocab_size, d_vocab_tgt=task.tgt_vocab_size, d_model=32,
                 n_heads=4, n_layers=1, n_ctx=task.max_src_len, n_ctx_tgt=task.max_tgt_len,
                 bos_id=tok.bos_id, eos_id=tok.eos_id, pad_id=tok.pad_id)
    return transformer.Seq2Seq(transformer.Seq2SeqConfig(**{**sizes, **kw}))


def test_train_seq2seq_learns_reversal_and_records_history():
    # catches: a trainer that does not step, steps on padded targets, or logs the wrong steps
    task = tasks.ReverseTask(alphabet_size=6, min_len=2, max_len=5)
    model = _s2s_for(task)
    held_out = task.batch(128, generator=99)
    with torch.no_grad():
        before = float(seq2seq_loss(model, held_out)[0])
    result = transformer.train_seq2seq(model, task, TrainConfig(steps=150, batch_size=32,
                                                                lr=3e-3, log_every=50),
                                       progress=False)
    with torch.no_grad():
        after, acc = (float(x) for x in seq2seq_loss(model, held_out))
    assert result.history.step == [1, 50, 100, 150]
    assert len(result.history.token_accuracy) == 4 and result.step == 150
    assert after < 0.5 * before, (before, after)
    assert acc > 0.5                                   # chance is 1/11 over the target ids
    assert not model.training                          # handed back in eval mode


def test_train_mlm_learns_beyond_uniform():
    text = gpt.load_corpus("stdlib", max_chars=20_000).text
    tok = data.SpecialTokenizer(gpt.CharTokenizer.fit(text))
    enc = transformer.Encoder(transformer.EncoderConfig(d_vocab=tok.vocab_size, d_model=32,
                                                        n_heads=4, n_layers=1, n_ctx=24))
    result = transformer.train_mlm(enc, text, tok, TrainConfig(steps=120, batch_size=32,
                                                               lr=3e-3, log_every=40),
                                   progress=False)
    uniform = math.log(tok.vocab_size)
    assert result.history.loss[0] > uniform - 0.5     # starts near chance
    assert result.history.loss[-1] < uniform - 1.0, result.history.loss


def test_mlm_batches_have_cls_sep_and_padding():
    tok = data.SpecialTokenizer(gpt.CharTokenizer.fit("abcdefgh"))
    ids = tok.encode("abcdefgh" * 20)
    tokens, mask = mlm_batches(ids, tok, batch_size=16, seq_len=10, min_len=2,
                               generator=torch.Generator().manual_seed(0))
    assert tokens.shape == (16, 10) and (tokens[:, 0] == tok.cls_id).all()
    lengths = mask.sum(1)
    assert (tokens[torch.arange(16), lengths - 1] == tok.sep_id).all()
    assert (tokens[~mask] == tok.pad_id).all() and lengths.min() < 10


def test_misfits_are_named(user_errors):
    task = tasks.NumberWordsTask(max_value=99)
    other = tasks.ReverseTask(alphabet_size=6)
    model = _s2s_for(task)
    with pytest.raises(ValueError, match="source vocabulary has 11 ids but the model's "
                                         "d_vocab gives 15"):
        transformer.train_seq2seq(model, other, TrainConfig(steps=1), progress=False)
    short = _s2s_for(task, n_ctx_tgt=2)
    with pytest.raises(ValueError, match="decoder inputs reach .* n_ctx_tgt is 2"):
        transformer.train_seq2seq(short, task, TrainConfig(steps=1), progress=False)
    tok = data.SpecialTokenizer(gpt.CharTokenizer.fit("abc"))
    enc = transformer.Encoder(transformer.EncoderConfig(d_vocab=tok.vocab_size + 1,
                                                        d_model=16, n_heads=2, n_ctx=8))
    with pytest.raises(ValueError, match="tokenizer has 8 ids but the encoder's d_vocab is 9"):
        transformer.train_mlm(enc, "abc" * 10, tok, TrainConfig(steps=1), progress=False)
    with pytest.raises(ValueError, match="steps must be"):
        TrainConfig(steps=0)
