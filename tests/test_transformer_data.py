"""Data for the encoder and encoder-decoder transformers: special tokens, batches, BERT's MLM
masking, seq2seq tasks with a known alignment, and the cross-attention alignment score."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from superpose.gpt.tokenizers import (
    BPETokenizer,
    ByteTokenizer,
    CharTokenizer,
    load_tokenizer,
)
from superpose.transformer.data import (
    IGNORE_INDEX,
    SPECIALS,
    SpecialTokenizer,
    WordTokenizer,
    encode_batch,
    mlm_mask,
    pad_sequences,
)
from superpose.transformer.tasks import (
    NUMBER_WORDS,
    NumberWordsTask,
    ReverseTask,
    Seq2SeqBatch,
    _longest_name,
    alignment_score,
    number_words,
)

# ---- special tokens ---------------------------------------------------------------------------


def test_special_ids_follow_the_base_vocabulary():
    base = CharTokenizer.fit("abc ")
    tok = SpecialTokenizer(base)
    n = base.vocab_size
    assert tok.vocab_size == n + 4
    assert (tok.pad_id, tok.mask_id, tok.cls_id, tok.sep_id) == (n, n + 1, n + 2, n + 3)
    assert tok.specials == {"[PAD]": n, "[MASK]": n + 1, "[CLS]": n + 2, "[SEP]": n + 3}
    assert (tok.bos_id, tok.eos_id) == (tok.cls_id, tok.sep_id)
    assert tok.special_ids == (n, n + 1, n + 2, n + 3)
    ids = tok.encode("[CLS]ab[MASK] c[SEP][PAD]")
    assert ids.tolist() == [n + 2, *base.encode("ab").tolist(), n + 1,
                            *base.encode(" c").tolist(), n + 3, n]
    assert tok.decode(ids) == "[CLS]ab[MASK] c[SEP][PAD]"
    assert tok.to_str_tokens(ids) == ["[CLS]", "a", "b", "[MASK]", " ", "c", "[SEP]", "[PAD]"]
    assert tok.to_str_tokens("a[SEP]") == ["a", "[SEP]"]
    assert tok.encode("").shape == (0,)
    assert tok.encode("[CLS").tolist() == base.encode("[CLS").tolist()   # not a special


def test_word_tokenizer_and_word_specials():
    words = WordTokenizer(["four", "thousand", "two"])
    assert words.encode("  four thousand\ntwo ").tolist() == [0, 1, 2]
    tok = SpecialTokenizer(words)
    ids = tok.encode("[CLS] four thousand two [SEP]")
    assert ids.tolist() == [5, 0, 1, 2, 6]
    assert tok.decode(ids) == "[CLS] four thousand two [SEP]"
    assert tok.encode(tok.decode(ids)).tolist() == ids.tolist()


@pytest.mark.parametrize("make", [
    lambda: CharTokenizer.fit("hello world"),
    ByteTokenizer,
    lambda: WordTokenizer(["a", "bb", "ccc"]),
    lambda: BPETokenizer.train("the cat sat on the mat " * 20, vocab_size=270),
])
def test_special_tokenizer_save_load_round_trip(tmp_path, make):
    tok = SpecialTokenizer(make())
    path = tok.save(tmp_path / "tok.json")
    data = json.loads(path.read_text())
    assert data["type"] == "special" and data["base"]["type"] == tok.base.type
    for loaded in (load_tokenizer(path), SpecialTokenizer.load(path)):
        assert isinstance(loaded, SpecialTokenizer)
        assert type(loaded.base) is type(tok.base)
        assert loaded.vocab_size == tok.vocab_size
        text = "[CLS] a bb [MASK] ccc [SEP]" if isinstance(tok.base, WordTokenizer) else \
            "[CLS]hello[MASK] world[SEP]"
        assert loaded.encode(text).tolist() == tok.encode(text).tolist()
        assert loaded.decode(tok.encode(text)) == tok.decode(tok.encode(text))


def test_load_tokenizer_imports_the_special_type_itself(tmp_path):
    path = SpecialTokenizer(CharTokenizer.fit("xyz")).save(tmp_path / "tok.json")
    WordTokenizer(["a", "b"]).save(tmp_path / "words.json")
    code = ("import sys; from superpose.gpt.tokenizers import load_tokenizer; "
            "assert 'superpose.transformer.data' not in sys.modules; "
            "t = load_tokenizer(sys.argv[1]); w = load_tokenizer(sys.argv[2]); "
            "print(type(t).__name__, t.vocab_size, type(w).__name__)")
    out = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "words.json")],
                         capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["SpecialTokenizer", "8", "WordTokenizer"]


def test_tokenizer_errors(user_errors, tmp_path):
    tok = SpecialTokenizer(CharTokenizer.fit("ab"))
    with pytest.raises(ValueError, match="already a SpecialTokenizer"):
        SpecialTokenizer(tok)
    with pytest.raises(ValueError, match="base must be a superpose tokenizer"):
        SpecialTokenizer("abc")
    with pytest.raises(ValueError, match="without whitespace"):
        WordTokenizer(["a b"])
    with pytest.raises(ValueError, match="distinct"):
        WordTokenizer(["a", "a"])
    with pytest.raises(ValueError, match="one string"):
        WordTokenizer("abc")
    with pytest.raises(ValueError, match="special token names"):
        WordTokenizer(["[SEP]"])
    with pytest.raises(ValueError, match=r"\['zebra'\] are not in"):
        WordTokenizer(["a"]).encode("a zebra")
    with pytest.raises(ValueError, match="outside the vocabulary"):
        tok.decode([tok.vocab_size])
    path = tok.save(tmp_path / "t.json")
    data = json.loads(path.read_text())
    data["base"]["type"] = "nonsense"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="base tokenizer type"):
        load_tokenizer(path)
    data["base"]["type"] = "special"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="itself a SpecialTokenizer"):
        load_tokenizer(path)
    path.write_text(json.dumps({"type": "specal", "format_version": 1}))
    with pytest.raises(ValueError, match=r"type must be one of .*adds \['special', 'word'\]"):
        load_tokenizer(path)
    data["base"] = "x"
    path.write_text(json.dumps(data))
    with pytest.raises(ValueError, match="'base' must hold"):
        load_tokenizer(path)
    with pytest.raises(ValueError, match="not a CharTokenizer"):
        CharTokenizer.load(tok.save(tmp_path / "u.json"))


# ---- padding and batches ----------------------------------------------------------------------


def test_pad_sequences_right_left_and_length():
    rows = [torch.tensor([1, 2, 3]), torch.tensor([4]), torch.tensor([], dtype=torch.long)]
    t, m = pad_sequences(rows, 0)
    assert t.tolist() == [[1, 2, 3], [4, 0, 0], [0, 0, 0]]
    assert m.tolist() == [[True] * 3, [True, False, False], [False] * 3]
    t, m = pad_sequences(rows, 9, "left", length=4)
    assert t.tolist() == [[9, 1, 2, 3], [9, 9, 9, 4], [9, 9, 9, 9]]
    assert m.sum(1).tolist() == [3, 1, 0] and m.dtype == torch.bool


def test_encode_batch():
    tok = SpecialTokenizer(CharTokenizer.fit("abcd"))
    c, s, p = tok.cls_id, tok.sep_id, tok.pad_id
    ab = tok.encode("ab").tolist()
    t, m = encode_batch(["ab", "abcd"], tok)
    assert t[0].tolist() == [c, *ab, s, p, p] and m[0].tolist() == [True] * 4 + [False] * 2
    assert t[1].tolist() == [c, *tok.encode("abcd").tolist(), s]
    t, m = encode_batch(["ab", "abcd"], tok, padding_side="left", add_cls=False)
    assert t[0].tolist() == [p, p, *ab, s] and m[0].tolist() == [False] * 2 + [True] * 3
    t, m = encode_batch(["ab"], tok, max_len=6, add_sep=False)
    assert t.tolist() == [[c, *ab, p, p, p]] and m.sum().item() == 3
    t, m = encode_batch(["abcd", "a"], tok, max_len=4, truncate=True)
    assert t[0].tolist() == [c, *tok.encode("ab").tolist(), s] and bool(m[0].all())
    t, _ = encode_batch(["[MASK]a"], tok)
    assert t[0].tolist() == [c, tok.mask_id, *tok.encode("a").tolist(), s]


def test_batch_errors(user_errors):
    tok = SpecialTokenizer(CharTokenizer.fit("abcd"))
    with pytest.raises(ValueError, match="longer than max_len=4.*truncate=True"):
        encode_batch(["abcd"], tok, max_len=4)
    with pytest.raises(ValueError, match="one string"):
        encode_batch("abcd", tok)
    with pytest.raises(ValueError, match="SpecialTokenizer"):
        encode_batch(["ab"], tok.base)
    with pytest.raises(ValueError, match="texts is empty"):
        encode_batch([], tok)
    with pytest.raises(ValueError, match="padding_side"):
        encode_batch(["ab"], tok, padding_side="middle")
    with pytest.raises(ValueError, match="no room"):
        encode_batch(["ab"], tok, max_len=1)
    with pytest.raises(ValueError, match=r"sequences\[1\] must be a 1-D integer"):
        pad_sequences([torch.tensor([1]), torch.tensor([1.0])], 0)
    with pytest.raises(ValueError, match="more than length=1"):
        pad_sequences([torch.tensor([1, 2])], 0, length=1)
    with pytest.raises(ValueError, match="sequences is empty"):
        pad_sequences([], 0)


# ---- MLM masking ------------------------------------------------------------------------------

V = 40
PAD, MASK, CLS, SEP = 36, 37, 38, 39
SPECIAL_IDS = (PAD, MASK, CLS, SEP)


def _mlm_batch(rows: int = 3000, length: int = 40, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(0, PAD, (rows, length), generator=g)
    lengths = torch.randint(2, length + 1, (rows,), generator=g)
    real = torch.arange(length)[None] < lengths[:, None]
    tokens[:, 0] = CLS
    tokens[torch.arange(rows), lengths - 1] = SEP
    tokens[~real] = PAD
    return tokens, real


def test_mlm_proportions_follow_bert():
    tokens, real = _mlm_batch()
    inputs, labels = mlm_mask(tokens, mask_id=MASK, vocab_size=V, attention_mask=real,
                              special_ids=SPECIAL_IDS, generator=1)
    chosen = labels != IGNORE_INDEX
    maskable = real & (tokens < PAD)
    # exactly max(1, round(0.15 n)) per row
    n = maskable.sum(1)
    k = torch.where(n > 0, torch.clamp(torch.round(0.15 * n.double()).long(), min=1), 0)
    assert chosen.sum(1).tolist() == k.tolist()
    assert not bool((chosen & ~maskable).any())                   # no pad, no special
    assert torch.equal(labels[chosen], tokens[chosen])
    assert torch.equal(inputs[~chosen], tokens[~chosen])          # nothing else changes
    total = int(chosen.sum())
    masked = (inputs == MASK) & chosen
    kept = (inputs == tokens) & chosen
    swapped = chosen & ~masked & ~kept
    assert abs(int(masked.sum()) / total - 0.8) < 0.02
    # a random replacement equals the original with probability 1/36
    assert abs(int(swapped.sum()) / total - 0.1 * 35 / 36) < 0.015
    assert abs(int(kept.sum()) / total - (0.1 + 0.1 / 36)) < 0.015
    assert int(inputs[swapped].max()) < PAD                       # never a special id
    # the random ids cover the non-special vocabulary
    assert set(inputs[swapped].tolist()) == set(range(PAD))


def test_mlm_fraction_and_at_least_one():
    tokens = torch.randint(0, 30, (500, 200), generator=torch.Generator().manual_seed(3))
    _, labels = mlm_mask(tokens, mask_id=MASK, vocab_size=V, p=0.3, generator=0)
    assert ((labels != IGNORE_INDEX).sum(1) == 60).all()
    short = torch.tensor([[CLS, 5, SEP, PAD], [CLS, SEP, PAD, PAD]])
    inputs, labels = mlm_mask(short, mask_id=MASK, vocab_size=V, special_ids=SPECIAL_IDS,
                              generator=0)
    assert labels[0].tolist() == [IGNORE_INDEX, 5, IGNORE_INDEX, IGNORE_INDEX]
    assert (labels[1] == IGNORE_INDEX).all() and torch.equal(inputs[1], short[1])


def test_mlm_is_deterministic_under_a_seed():
    tokens, real = _mlm_batch(rows=50)
    kw = dict(mask_id=MASK, vocab_size=V, attention_mask=real, special_ids=SPECIAL_IDS)
    a = mlm_mask(tokens, **kw, generator=7)
    b = mlm_mask(tokens, **kw, generator=torch.Generator().manual_seed(7))
    c = mlm_mask(tokens, **kw, generator=8)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    assert not torch.equal(a[1], c[1])


def test_mlm_errors(user_errors):
    tokens, real = _mlm_batch(rows=4)
    kw = dict(mask_id=MASK, vocab_size=V)
    for p in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match=r"p .* must be in \(0, 1\)"):
            mlm_mask(tokens, **kw, p=p)
    with pytest.raises(ValueError, match="mask_id must be a token id in"):
        mlm_mask(tokens, mask_id=V, vocab_size=V)
    with pytest.raises(ValueError, match="attention_mask has shape"):
        mlm_mask(tokens, **kw, attention_mask=real[:, :-1])
    with pytest.raises(ValueError, match="attention_mask must be a bool"):
        mlm_mask(tokens, **kw, attention_mask=real.long())
    with pytest.raises(ValueError, match="2-D integer"):
        mlm_mask(tokens.float(), **kw)
    with pytest.raises(ValueError, match=r"tokens\[0, 0\] = 40 is outside"):
        mlm_mask(torch.full((2, 3), V), **kw)
    with pytest.raises(ValueError, match="special_ids must be token ids"):
        mlm_mask(tokens, **kw, special_ids=(V + 3,))
    with pytest.raises(ValueError, match="every id"):
        mlm_mask(torch.zeros(1, 2, dtype=torch.long), mask_id=1, vocab_size=2, special_ids=(0,))


def test_mlm_with_encode_batch():
    tok = SpecialTokenizer(CharTokenizer.fit("abcdefgh"))
    tokens, mask = encode_batch(["abcdefgh" * 3, "abc"], tok, max_len=32)
    inputs, labels = mlm_mask(tokens, mask_id=tok.mask_id, vocab_size=tok.vocab_size,
                              attention_mask=mask, special_ids=tok.special_ids, generator=0)
    chosen = labels != IGNORE_INDEX
    assert chosen.sum(1).tolist() == [4, 1]
    assert not bool(torch.isin(tokens[chosen], torch.tensor(tok.special_ids)).any())


# ---- number words -----------------------------------------------------------------------------


@pytest.mark.parametrize("value,words,align", [
    (0, "zero", [(0,)]),
    (7, "seven", [(0,)]),
    (13, "thirteen", [(0, 1)]),
    (10, "ten", [(0, 1)]),
    (20, "twenty", [(0,)]),
    (110, "one hundred ten", [(0,), (0,), (1, 2)]),
    (4072, "four thousand seventy two", [(0,), (0,), (2,), (3,)]),
    (12345, "twelve thousand three hundred forty five", [(0, 1), (1,), (2,), (2,), (3,), (4,)]),
    (72000, "seventy two thousand", [(0,), (1,), (1,)]),
    (100000, "one hundred thousand", [(0,), (0,), (2,)]),
    (1000005, "one million five", [(0,), (0,), (6,)]),
    (1000000000, "one billion", [(0,), (0,)]),
    (999999999999, "nine hundred ninety nine billion nine hundred ninety nine million nine "
     "hundred ninety nine thousand nine hundred ninety nine", None),
])
def test_number_words_and_alignment(value, words, align):
    w, a = number_words(value)
    assert " ".join(w) == words
    assert len(a) == len(w) and all(0 <= i < len(str(value)) for pos in a for i in pos)
    if align is not None:
        assert [tuple(x) for x in a] == align


def test_longest_name_is_exact():
    lengths = [len(number_words(x)[0]) for x in range(1100)]
    for top in (0, 9, 10, 99, 100, 110, 120, 1000, 1010, 1099):
        assert _longest_name(top) == max(lengths[:top + 1]), top
    # beyond the brute-forced range: the longest names are known
    assert _longest_name(9999) == 6                    # 7,777
    assert _longest_name(20000) == 6                   # 19,777: a teen thousands group
    assert _longest_name(99999) == 7                   # 77,777
    assert _longest_name(10 ** 12 - 1) == 19           # 777,777,777,777


# ---- seq2seq tasks ----------------------------------------------------------------------------


def _check_layout(task, b: Seq2SeqBatch):
    st, tt = task.src_tokenizer, task.tgt_tokenizer
    assert torch.equal(b.src_mask, b.src != st.pad_id)
    assert torch.equal(b.tgt_mask, b.tgt_in != tt.pad_id)
    assert torch.equal(b.tgt_mask, b.tgt_out != IGNORE_INDEX)
    for i, e in enumerate(b.examples):
        src = b.src[i][b.src_mask[i]].tolist()
        tin = b.tgt_in[i][b.tgt_mask[i]].tolist()
        tout = b.tgt_out[i][b.tgt_mask[i]].tolist()
        assert src == [*e.src_ids, st.sep_id]
        assert tin == [tt.bos_id, *e.tgt_ids] and tout == [*e.tgt_ids, tt.eos_id]
        assert tin[1:] == tout[:-1]                               # shifted right
        real_t = b.tgt_mask[i].nonzero()[:, 0]
        real_s = b.src_mask[i].nonzero()[:, 0]
        al = b.alignment[i][real_t][:, real_s]
        assert not bool(b.alignment[i][~b.tgt_mask[i]].any())
        assert not bool(b.alignment[i][:, ~b.src_mask[i]].any())
        assert not bool(al[-1].any()) and not bool(al[:, -1].any())  # EOS row, source [SEP]
        assert [tuple(r.nonzero()[:, 0].tolist()) for r in al[:-1]] == list(e.alignment)
        assert task.decode_target(b.tgt_out[i]) == e.tgt == task.decode_target(b.tgt_in[i])
    assert b.src.shape[1] <= task.max_src_len and b.tgt_in.shape[1] <= task.max_tgt_len


@pytest.mark.parametrize("side", ["right", "left"])
def test_reverse_task(side):
    task = ReverseTask(alphabet_size=6, min_len=2, max_len=7)
    b = task.batch(32, generator=0, padding_side=side)
    _check_layout(task, b)
    for e in b.examples:
        assert e.tgt == e.src[::-1] and set(e.src) <= set("abcdef")
        L = len(e.src)
        assert e.alignment == tuple((L - 1 - t,) for t in range(L))   # the anti-diagonal
        assert 2 <= L <= 7
    if side == "right":
        e, A = b.examples[0], b.alignment[0]
        L = len(e.src)
        assert torch.equal(A[:L, :L].int(), torch.eye(L, dtype=torch.int).flip(1))
    else:
        assert bool(b.src_mask[:, -1].all()) and bool(b.tgt_mask[:, -1].all())
    assert task.src_vocab_size == task.tgt_vocab_size == 6 + 1 + 4


@pytest.mark.parametrize("side", ["right", "left"])
def test_number_words_task(side):
    task = NumberWordsTask(max_value=99999)
    b = task.batch(24, generator=1, padding_side=side)
    _check_layout(task, b)
    for e in b.examples:
        assert e.tgt == " ".join(number_words(int(e.src))[0])
    lengths = [len(e.src) for e in task.sample(250, generator=2)]
    assert min(lengths) == 1 and max(lengths) == 5 and 30 < lengths.count(1) < 70
    assert task.tgt_vocab_size == len(NUMBER_WORDS) + 4 and task.src_vocab_size == 10 + 1 + 4


def test_hand_checked_batch_with_left_padding():
    task = NumberWordsTask(max_value=9999)
    b = task.collate([task.example(4072), task.example(13)], padding_side="left")
    tt = task.tgt_tokenizer
    assert b.src.shape == (2, 5) and b.tgt_in.shape == (2, 5)
    assert task.src_tokenizer.decode(b.src[1]) == "[PAD][PAD]13[SEP]"
    assert tt.decode(b.tgt_in[1]) == "[PAD] [PAD] [PAD] [CLS] thirteen"
    assert b.tgt_out[1].tolist() == [IGNORE_INDEX] * 3 + [tt.encode("thirteen").item(),
                                                           tt.eos_id]
    assert b.alignment[1].nonzero().tolist() == [[3, 2], [3, 3]]     # thirteen -> '1', '3'
    assert b.alignment[0].nonzero().tolist() == [[0, 0], [1, 0], [2, 2], [3, 3]]
    b = task.collate([task.example(13)], pad_to_max=True)
    assert b.src.shape == (1, task.max_src_len) and b.tgt_in.shape == (1, task.max_tgt_len)
    assert task.max_tgt_len == 7   # "seven thousand seven hundred seventy seven" + EOS


def test_tasks_are_deterministic():
    for task in (ReverseTask(), NumberWordsTask()):
        a = task.batch(16, generator=5)
        b = task.batch(16, generator=torch.Generator().manual_seed(5))
        c = task.batch(16, generator=6)
        for name in ("src", "tgt_in", "tgt_out", "alignment"):
            assert torch.equal(getattr(a, name), getattr(b, name))
        assert a.examples != c.examples


def test_exact_match():
    task = NumberWordsTask(max_value=999)
    for side in ("right", "left"):
        b = task.batch(10, generator=0, padding_side=side)
        assert task.exact_match(b.tgt_out.clamp(min=0), b) == 1.0      # teacher-forced argmax
        garbage = b.tgt_out.masked_fill(~b.tgt_mask, 3)                  # junk at padding
        assert task.exact_match(garbage, b) == 1.0
        wrong = b.tgt_out.clone()
        wrong[0, b.tgt_mask[0].nonzero()[0, 0]] = task.tgt_tokenizer.encode("hundred").item()
        wrong = wrong.masked_fill(~b.tgt_mask, task.tgt_tokenizer.pad_id)
        assert task.exact_match(wrong, b) == pytest.approx(0.9)    # no name starts "hundred"
        no_eos = b.tgt_out.masked_fill(b.tgt_out == task.tgt_tokenizer.eos_id, 0)
        no_eos = no_eos.masked_fill(~b.tgt_mask, task.tgt_tokenizer.pad_id)
        assert task.exact_match(no_eos, b) == 0.0                      # "... zero" != target
    # generated rows: BOS, target, EOS, then anything; another width than the batch
    b = task.collate([task.example(42), task.example(7)])
    tt = task.tgt_tokenizer
    gen = torch.stack([tt.encode("[CLS] forty two [SEP] one one one"),
                       tt.encode("[CLS] seven [SEP] [PAD] [PAD] [PAD] [PAD]")])
    assert task.exact_match(gen, b) == 1.0
    gen[1, 1] = tt.encode("six").item()
    assert task.exact_match(gen, b) == 0.5
    assert task.decode_target(gen[0]) == "forty two"


def test_task_errors(user_errors):
    with pytest.raises(ValueError, match="max_len .* must be at least min_len"):
        ReverseTask(min_len=5, max_len=3)
    with pytest.raises(ValueError, match="alphabet_size must be at most 62"):
        ReverseTask(alphabet_size=63)
    with pytest.raises(ValueError, match="max_value must be at most"):
        NumberWordsTask(max_value=10 ** 12)
    with pytest.raises(ValueError, match="distribution"):
        NumberWordsTask(distribution="log")
    with pytest.raises(ValueError, match="n must be a positive integer"):
        ReverseTask().batch(0)
    with pytest.raises(ValueError, match="value must be an integer"):
        number_words(-1)
    task = ReverseTask()
    b = task.batch(4, generator=0)
    with pytest.raises(ValueError, match="pred_ids has 3 rows"):
        task.exact_match(b.tgt_out[:3], b)
    with pytest.raises(ValueError, match="examples is empty"):
        task.collate([])


# ---- alignment score --------------------------------------------------------------------------


def test_alignment_score_known_answers():
    task = NumberWordsTask(max_value=99999)
    b = task.batch(16, generator=0)
    al = b.alignment.float()
    perfect = al / al.sum(-1, keepdim=True).clamp(min=1)
    perfect[~b.alignment.any(-1)] = 1.0 / b.src.shape[1]         # rows that are not scored
    uniform = b.src_mask[:, None, :].float().expand(-1, b.tgt_in.shape[1], -1)
    uniform = uniform / uniform.sum(-1, keepdim=True)
    wrong = (~b.alignment & b.src_mask[:, None, :]).float()
    wrong = wrong / wrong.sum(-1, keepdim=True).clamp(min=1)
    pattern = torch.stack([perfect, uniform, wrong], dim=1)       # [b, 3 heads, T, S]
    out = alignment_score(pattern, b.alignment, tgt_mask=b.tgt_mask, src_mask=b.src_mask)
    rows = b.tgt_mask & b.alignment.any(-1)
    assert out["n_rows"] == int(rows.sum())
    share = b.alignment.sum(-1) / b.src_mask.sum(-1, keepdim=True)
    chance = share[rows].mean()
    assert torch.allclose(out["chance"], chance.float())
    assert torch.allclose(out["mass"], torch.tensor([1.0, float(chance), 0.0]), atol=1e-6)
    assert out["argmax_accuracy"][0] == 1.0 and out["argmax_accuracy"][2] == 0.0
    one = alignment_score(perfect, b.alignment, tgt_mask=b.tgt_mask, src_mask=b.src_mask)
    assert one["mass"].shape == (1,) and one["mass"].item() == pytest.approx(1.0)


def test_alignment_score_argmax_ignores_padding():
    alignment = torch.tensor([[[True, False, False]]])
    pattern = torch.tensor([[[0.3, 0.2, 0.5]]])
    src_mask = torch.tensor([[True, True, False]])
    out = alignment_score(pattern, alignment, src_mask=src_mask)
    assert out["argmax_accuracy"].item() == 1.0 and out["mass"].item() == pytest.approx(0.3)
    assert out["chance"].item() == pytest.approx(0.5)


def test_alignment_score_errors(user_errors):
    al = torch.zeros(2, 3, 4, dtype=torch.bool)
    with pytest.raises(ValueError, match="nothing to score"):
        alignment_score(torch.rand(2, 3, 4), al)
    al[0, 0, 3] = True
    with pytest.raises(ValueError, match="alignment has shape"):
        alignment_score(torch.rand(2, 3, 5), al)
    with pytest.raises(ValueError, match="src_mask marks as padding"):
        alignment_score(torch.rand(2, 3, 4), al,
                        src_mask=torch.tensor([[True] * 3 + [False]] * 2))
    with pytest.raises(ValueError, match="NaN/inf"):
        alignment_score(torch.full((2, 3, 4), float("nan")), al)
    with pytest.raises(ValueError, match="tgt_mask must be a bool tensor"):
        alignment_score(torch.rand(2, 3, 4), al, tgt_mask=torch.ones(2, 3))
    with pytest.raises(ValueError, match="pattern must be a float tensor"):
        alignment_score(torch.rand(3, 4), al)


def test_specials_constant():
    assert SPECIALS == ("[PAD]", "[MASK]", "[CLS]", "[SEP]")


def test_batch_to_and_len():
    task = ReverseTask(max_len=3)
    b = task.batch(5, generator=0)
    moved = b.to("cpu")
    assert len(moved) == 5 and moved.examples == b.examples
    assert torch.equal(moved.alignment, b.alignment) and moved.padding_side == "right"
