"""Data for the small GPT: tokenizers, the embedded corpus, token windows, synthetic languages."""

import json
import logging
import math

import pytest
import torch

from superpose.gpt import corpus as C
from superpose.gpt import synthetic as S
from superpose.gpt import tokenizers as T

TEXT = "def f(x):\n    return x  # ünïcode ✓ 😀\n\ttabs and  spaces\n"


@pytest.fixture(scope="module")
def small_corpus() -> C.Corpus:
    return C.load_corpus(max_chars=60_000)


@pytest.fixture(scope="module")
def bpe(small_corpus) -> T.BPETokenizer:
    return T.BPETokenizer.train(small_corpus, vocab_size=400)


# --- tokenizers -------------------------------------------------------------------------------

def test_char_tokenizer_vocab_round_trip_and_unknowns():
    tok = T.CharTokenizer.fit(TEXT)
    assert list(tok.chars) == sorted(set(TEXT))
    assert tok.vocab_size == len(set(TEXT)) + 1 and tok.unk_id == tok.vocab_size - 1
    ids = tok.encode(TEXT)
    assert ids.dtype == torch.long and ids.shape == (len(TEXT),)
    assert tok.decode(ids) == TEXT and tok.decode(ids.tolist()) == TEXT
    # Ids follow sorted character order.
    assert tok.encode(" ").item() == 2 and tok.encode("\n").item() == 1
    # Unseen characters: <unk> by default (decoded as U+FFFD), an error when strict.
    assert tok.encode("xZ").tolist() == [tok.encode("x").item(), tok.unk_id]
    assert tok.decode(tok.encode("xZ")) == "x\ufffd"
    with pytest.raises(ValueError, match=r"characters \['Q', 'Z'\] never appeared .* position 1"):
        tok.encode("xZQ", errors="strict")
    assert tok.encode("").shape == (0,)


def test_char_tokenizer_fits_a_corpus_including_its_validation_text(small_corpus):
    tok = T.CharTokenizer.fit(small_corpus)
    assert tok.unk_id not in tok.encode(small_corpus.val).tolist()
    assert tok.decode(tok.encode(small_corpus.text)) == small_corpus.text


@pytest.mark.parametrize("text", [TEXT, "", "a", "\x00\xff\u0100\U0010ffff", "é" * 5])
def test_byte_tokenizer_exact_round_trip(text):
    tok = T.ByteTokenizer()
    ids = tok.encode(text)
    assert tok.vocab_size == 256 and ids.dtype == torch.long
    assert ids.tolist() == list(text.encode("utf-8"))
    assert tok.decode(ids) == text


def test_bpe_round_trip_compresses_and_is_deterministic(small_corpus, bpe):
    assert bpe.vocab_size == 400
    for text in (TEXT, small_corpus.val[:5000], ""):
        assert bpe.decode(bpe.encode(text)) == text          # byte-level: no unknowns
    val = small_corpus.val
    assert len(bpe.encode(val)) < 0.6 * len(val.encode())    # merges learned on train help val
    again = T.BPETokenizer.train(small_corpus, vocab_size=400)
    assert torch.equal(again.encode(val), bpe.encode(val))


def test_bpe_trains_from_an_iterator_with_special_tokens():
    lines = (f"token number {i} and token number {i + 1}\n" for i in range(300))
    tok = T.BPETokenizer.train(lines, vocab_size=300, special_tokens=["<|bos|>"])
    ids = tok.encode("<|bos|>token number 7")
    assert tok.to_str_tokens(ids)[0] == "<|bos|>"
    assert tok.decode(ids) == "<|bos|>token number 7"


@pytest.mark.parametrize("make", [lambda: T.CharTokenizer.fit(TEXT), T.ByteTokenizer,
                                  "bpe"])
def test_to_str_tokens_one_string_per_token(make, bpe):
    tok = bpe if make == "bpe" else make()
    text = "return x  # tabs"
    pieces = tok.to_str_tokens(text)
    assert len(pieces) == len(tok.encode(text))
    assert "".join(pieces) == text                             # ASCII: pieces are the text
    assert tok.to_str_tokens(tok.encode(text)) == pieces
    assert tok.to_str_tokens(tok.encode(text).tolist()) == pieces


def test_to_str_tokens_shows_partial_bytes_as_escapes(bpe):
    assert T.ByteTokenizer().to_str_tokens("é") == ["\\xc3", "\\xa9"]
    assert "".join(bpe.to_str_tokens("é")).encode().decode("unicode_escape") in ("é", "Ã©")


@pytest.mark.parametrize("make", [lambda: T.CharTokenizer.fit(TEXT), T.ByteTokenizer,
                                  "bpe"])
def test_save_load_round_trip(make, bpe, tmp_path):
    tok = bpe if make == "bpe" else make()
    path = tok.save(tmp_path / "tok.json")
    assert json.loads(path.read_text())["type"] == tok.type
    back = T.load_tokenizer(path)
    assert type(back) is type(tok) and back.vocab_size == tok.vocab_size
    assert torch.equal(back.encode(TEXT), tok.encode(TEXT))
    assert type(tok).load(path).decode(tok.encode(TEXT)) == tok.decode(tok.encode(TEXT))
    assert [p.name for p in tmp_path.iterdir()] == ["tok.json"]   # no temporary file left


def test_decode_errors(user_errors):
    tok = T.CharTokenizer.fit("abc")
    with pytest.raises(ValueError, match=r"token id 4 at position 1 is outside .* 0\.\.3"):
        tok.decode([0, 4])
    with pytest.raises(ValueError, match="token id -1 at position 0"):
        tok.decode(torch.tensor([-1]))
    with pytest.raises(ValueError, match=r"token id 256 .* ByteTokenizer \(valid ids are 0\.\.255"):
        T.ByteTokenizer().decode([256])
    with pytest.raises(ValueError, match=r"1-D integer tensor, got shape \[2, 2\]"):
        tok.decode(torch.zeros(2, 2, dtype=torch.long))
    with pytest.raises(ValueError, match="ids must be integers, got 1.5"):
        tok.decode([1.5])


def test_fit_and_train_errors(user_errors):
    with pytest.raises(ValueError, match="non-empty text, got an empty string"):
        T.CharTokenizer.fit("")
    with pytest.raises(ValueError, match="takes a str or a Corpus, got int"):
        T.CharTokenizer.fit(3)
    with pytest.raises(ValueError, match=r"at least 256 .* \+ 1 special token\(s\) = 257, got 100"):
        T.BPETokenizer.train("abc", vocab_size=100, special_tokens=["<s>"])
    with pytest.raises(ValueError, match="needs some text, got none"):
        T.BPETokenizer.train([], vocab_size=300)
    with pytest.raises(ValueError, match="errors must be one of"):
        T.CharTokenizer.fit("a").encode("a", errors="ignore")
    with pytest.raises(ValueError, match="lone surrogates"):
        T.ByteTokenizer().encode("a\udcff")


def test_load_errors(tmp_path):
    path = tmp_path / "tok.json"
    T.ByteTokenizer().save(path)
    with pytest.raises(ValueError, match="holds a ByteTokenizer .* use .*load_tokenizer"):
        T.CharTokenizer.load(path)
    path.write_text('{"type": "chars", "format_version": 1}')
    with pytest.raises(ValueError, match=r"type must be one of \['char', 'byte', 'bpe'\], got "
                                         r"'chars' \(did you mean 'char'\?\)"):
        T.load_tokenizer(path)
    path.write_text('{"type": "char", "format_version": 1}')
    with pytest.raises(ValueError, match="key 'chars' must hold a list, got NoneType"):
        T.load_tokenizer(path)
    path.write_text('{"type": "char", "format_version": 1, "chars": ["b", "a"]}')
    with pytest.raises(ValueError, match="sorted and distinct"):
        T.load_tokenizer(path)
    path.write_text('{"type": "bpe", "format_version": 1, "tokenizer": {"model": 3}}')
    with pytest.raises(ValueError, match="not a valid HuggingFace tokenizer"):
        T.load_tokenizer(path)
    path.write_text("{truncated")
    with pytest.raises(ValueError, match="not valid JSON"):
        T.load_tokenizer(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a saved tokenizer"):
        T.load_tokenizer(path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        T.load_tokenizer(tmp_path / "missing.json")


# --- corpus -----------------------------------------------------------------------------------

def test_stdlib_corpus_is_deterministic_sized_and_split_cleanly():
    a, b = C.load_corpus(), C.load_corpus()
    assert a == b
    assert 1_000_000 < len(a) < 4_000_000                    # a few MB at most
    assert list(C.STDLIB_MODULES) == sorted(C.STDLIB_MODULES)
    assert len(a.sources) == len(C.STDLIB_MODULES)           # every file found on this Python
    assert a.text.startswith("# file: abc.py\n")
    # The split: train then val, nothing shared or lost, val ~10% and starting at a line start.
    assert a.train + a.val == a.text
    assert len(a.val) / len(a) == pytest.approx(0.1, abs=0.002)
    assert a.train.endswith("\n")
    # A character vocabulary stays small (near printable ASCII).
    assert T.CharTokenizer.fit(a).vocab_size < 110


def test_corpus_max_chars_docs_variant_and_errors(user_errors):
    c = C.load_corpus(max_chars=10_000)
    assert len(c) == 10_000 and c.text == C.load_corpus().text[:10_000]
    d = C.load_corpus("stdlib-docs")
    assert 100_000 < len(d) < len(C.load_corpus())           # docstrings only, no code:
    code = "def __instancecheck__(cls, instance):"
    assert code in C.load_corpus().text and code not in d.text
    with pytest.raises(ValueError, match=r"name must be one of .* got 'stdlb' \(did you mean"):
        C.load_corpus("stdlb")
    with pytest.raises(ValueError, match="max_chars must be a positive integer, got 0"):
        C.load_corpus(max_chars=0)
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\), got 1"):
        C.load_corpus(val_fraction=1)
    assert C.load_corpus(max_chars=5000, val_fraction=0).val == ""


def test_corpus_falls_back_when_source_files_are_missing(tmp_path, monkeypatch, caplog):
    (tmp_path / "json").mkdir()
    (tmp_path / "json" / "__init__.py").write_text('"""Only this file is here."""\nx = 1\n')
    monkeypatch.setattr(C, "_stdlib_dir", lambda: tmp_path)
    c = C.load_corpus()
    assert c.sources[C.STDLIB_MODULES.index("json")] == "json/__init__.py"
    assert "abc (docstrings)" in c.sources                    # read from the imported module
    assert "Only this file is here." in c.text
    assert "Abstract Base Classes" in c.text
    monkeypatch.setattr(C, "_docstrings_from_import", lambda m: 1 / 0)
    with caplog.at_level(logging.WARNING, logger="superpose.gpt.corpus"):
        c = C.load_corpus()
    assert c.sources == ("json/__init__.py",) and "skipping abc" in caplog.text
    (tmp_path / "json" / "__init__.py").unlink()
    with pytest.raises(RuntimeError, match="no standard-library text .*corpus.load_text_files"):
        C.load_corpus()


def test_load_text_files(tmp_path):
    a, b = tmp_path / "a.txt", tmp_path / "b.txt"
    a.write_text("first file, no newline")
    b.write_text("\ufeff" + "second file\n" * 20)
    c = C.load_text_files([a, b], val_fraction=0.25)
    assert c.text == "first file, no newline\n" + "second file\n" * 20
    assert c.sources == (str(a), str(b)) and c.val.startswith("second")
    assert C.load_text_files(str(a), val_fraction=0.0).train == "first file, no newline"

    with pytest.raises(FileNotFoundError, match="missing.txt does not exist"):
        C.load_text_files([a, tmp_path / "missing.txt"])
    with pytest.raises(ValueError, match="is not a file"):
        C.load_text_files([tmp_path])
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(ValueError, match="empty.txt is empty"):
        C.load_text_files([tmp_path / "empty.txt"])
    (tmp_path / "latin.txt").write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt is not UTF-8 text \(byte 0xe9 at offset 3\)"):
        C.load_text_files([tmp_path / "latin.txt"])
    with pytest.raises(ValueError, match="at least one path"):
        C.load_text_files([])


# --- token windows ----------------------------------------------------------------------------

def test_sampler_shapes_targets_and_determinism():
    tokens = torch.arange(1000)
    ds = C.TokenDataset(tokens, n_ctx=16)
    x, y = ds.sample(8, generator=torch.Generator().manual_seed(0))
    assert x.shape == y.shape == (8, 16) and x.dtype == y.dtype == torch.long
    # Windows are contiguous runs of the stream and the targets are the next tokens.
    assert torch.equal(y, x + 1)
    assert torch.equal(x - x[:, :1], torch.arange(16).expand(8, 16))
    x2, _ = ds.sample(8, generator=torch.Generator().manual_seed(0))
    x3, _ = ds.sample(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, x2) and not torch.equal(x, x3)
    # Every start is reachable, and the last window ends on the last token.
    g = torch.Generator().manual_seed(0)
    starts = torch.cat([next(ds.batches(512, generator=g))[0][:, 0] for _ in range(20)])
    assert starts.min() == 0 and starts.max() == 1000 - 16 - 1


def test_sequential_windows_cover_the_stream_in_order():
    tokens = torch.randint(0, 50, (101,), generator=torch.Generator().manual_seed(0),
                           dtype=torch.int32)
    ds = C.TokenDataset(tokens, n_ctx=10)
    assert len(ds) == 10
    batches = list(ds.sequential(4))
    assert [b[0].shape[0] for b in batches] == [4, 4, 2]
    x = torch.cat([b[0] for b in batches])
    y = torch.cat([b[1] for b in batches])
    assert x.dtype == torch.long
    assert torch.equal(x.flatten(), tokens[:100].long()) and torch.equal(y.flatten(),
                                                                         tokens[1:].long())
    assert all(torch.equal(p[0], q[0]) for p, q in zip(batches, ds.sequential(4)))
    assert len(list(ds.sequential(4, max_batches=2))) == 2
    assert torch.equal(ds[-1][1], tokens[91:].long())


def test_sampler_errors(user_errors):
    with pytest.raises(ValueError, match=r"at least n_ctx \+ 1 = 11 tokens .* got 10"):
        C.TokenDataset(torch.arange(10), n_ctx=10)
    with pytest.raises(ValueError, match="1-D integer tensor"):
        C.TokenDataset(torch.rand(100), n_ctx=10)
    with pytest.raises(ValueError, match="n_ctx must be a positive integer"):
        C.TokenDataset(torch.arange(100), n_ctx=0)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        C.TokenDataset(torch.arange(100), n_ctx=4).sample(0, generator=torch.Generator())


def test_corpus_to_batches_end_to_end(small_corpus):
    tok = T.CharTokenizer.fit(small_corpus)
    ds = C.TokenDataset(tok.encode(small_corpus.train), n_ctx=32)
    x, y = ds.sample(4, generator=torch.Generator().manual_seed(0))
    assert tok.decode(x[0])[1:] == tok.decode(y[0])[:-1]
    assert tok.decode(x[0]) in small_corpus.train


# --- synthetic data ---------------------------------------------------------------------------

def test_repeated_tokens_structure():
    t = S.repeated_tokens(64, 20, 50, generator=torch.Generator().manual_seed(0))
    assert t.shape == (64, 40) and t.dtype == torch.long
    assert torch.equal(t[:, :20], t[:, 20:])
    assert t.min() >= 0 and t.max() < 50
    assert torch.equal(t, S.repeated_tokens(64, 20, 50, generator=0, device="cpu"))  # a seed too
    b = S.repeated_tokens(2000, 10, 5, generator=1, bos=2, device="cpu")
    assert b.shape == (2000, 21) and (b[:, 0] == 2).all() and (b[:, 1:] != 2).all()
    assert torch.equal(b[:, 1:11], b[:, 11:])
    counts = torch.bincount(b[:, 1:11].flatten(), minlength=5).float() / (2000 * 10)
    torch.testing.assert_close(counts, torch.tensor([0.25, 0.25, 0, 0.25, 0.25]), atol=0.01,
                               rtol=0)


def test_repeated_tokens_errors(user_errors):
    with pytest.raises(ValueError, match="bos must be a token id below d_vocab=5, got 5"):
        S.repeated_tokens(1, 4, 5, generator=0, bos=5)
    with pytest.raises(ValueError, match="seq_len must be a positive integer, got 0"):
        S.repeated_tokens(1, 0, 5, generator=0)


def test_dyck_samples_are_valid_and_follow_the_sampler():
    d = S.Dyck(n_types=3, length=24, p_open=0.6, max_depth=4)
    t = d.sample(4000, generator=torch.Generator().manual_seed(0))
    assert t.shape == (4000, 25) and d.d_vocab == 7 and (t[:, 0] == d.bos_id).all()
    assert d.is_valid(t).all()
    assert torch.equal(t, d.sample(4000, generator=0, device="cpu"))
    depth = d.depth(t)
    assert depth.max() == 4 and depth.min() == 0     # max_depth reached, not exceeded
    assert (depth[:, -1] == 0).all()
    # Where both are allowed, the sampler opens with probability p_open.
    ok = d.valid_next(t)
    free = ok[..., :3].any(-1) & ok[..., 3:6].any(-1)
    opened = t[:, 1:][free] < 3
    assert opened.float().mean().item() == pytest.approx(0.6, abs=0.01)
    # The mean log-loss of the real next tokens under the sampler's distribution matches its
    # entropy (the two are equal in expectation).
    dist = d.next_token_probs(t)
    nll = -dist.gather(-1, t[:, 1:, None]).log().mean().item()
    assert nll == pytest.approx(d.optimal_loss(t), rel=0.01)
    assert d.forced(t).any() and d.to_str_tokens(t[0])[:2] in (["<bos>", b] for b in "([{")


def test_old_positional_generator_and_batch_keyword_warn_and_give_the_same_tokens():
    want = S.repeated_tokens(6, 5, 9, generator=4, bos=0, device="cpu")
    with pytest.warns(DeprecationWarning, match=r"pass generator=\.\.\. by keyword"):
        assert torch.equal(S.repeated_tokens(6, 5, 9, 4, bos=0, device="cpu"), want)
    with pytest.warns(DeprecationWarning, match=r"repeated_tokens\(batch=\.\.\.\) is now "
                                                r"repeated_tokens\(batch_size=\.\.\.\)"):
        got = S.repeated_tokens(batch=6, seq_len=5, d_vocab=9, generator=4, bos=0, device="cpu")
    assert torch.equal(got, want)
    with pytest.raises(TypeError, match="both batch_size= and its old name batch="):
        S.repeated_tokens(6, 5, 9, batch=6, generator=4)
    with pytest.raises(TypeError, match="generator both positionally and as generator="):
        S.repeated_tokens(6, 5, 9, 4, generator=4)
    with pytest.raises(TypeError, match="missing required argument 'd_vocab'"):
        S.repeated_tokens(6, 5, generator=4)
    d = S.Dyck(n_types=2, length=8)
    with pytest.warns(DeprecationWarning, match="pass generator=... by keyword"):
        assert torch.equal(d.sample(5, 1), d.sample(5, generator=1))
    with pytest.warns(DeprecationWarning, match=r"Dyck.sample\(batch=\.\.\.\) is now"):
        assert torch.equal(d.sample(batch=5, generator=1), d.sample(5, generator=1))
    ds = C.TokenDataset(torch.arange(100), n_ctx=4)
    with pytest.warns(DeprecationWarning, match="TokenDataset.sample"):
        old = ds.sample(3, torch.Generator().manual_seed(2))
    torch.testing.assert_close(old, ds.sample(3, generator=torch.Generator().manual_seed(2)))
    with pytest.warns(DeprecationWarning, match="TokenDataset.batches"):
        next(ds.batches(3, torch.Generator()))


def test_synthetic_tokens_follow_device_and_generator_rules(user_errors):
    # An int seed draws on a CPU generator (the same tokens on every machine), then moves.
    cpu = torch.Generator().manual_seed(7)
    torch.testing.assert_close(S.repeated_tokens(3, 4, 10, generator=7, device="cpu"),
                               S.repeated_tokens(3, 4, 10, generator=cpu))
    assert S.repeated_tokens(3, 4, 10, generator=7).device.type == (
        "cuda" if torch.cuda.is_available() else "cpu")
    # None draws from torch's global generator.
    torch.manual_seed(11)
    a = S.repeated_tokens(3, 4, 10, device="cpu")
    torch.manual_seed(11)
    assert torch.equal(a, S.repeated_tokens(3, 4, 10, device="cpu"))
    # A generator and an explicit device elsewhere: an error naming both, not a silent move.
    if torch.cuda.is_available():
        with pytest.raises(ValueError, match=r"generator lives on cpu but device='cuda'"):
            S.repeated_tokens(3, 4, 10, generator=torch.Generator(), device="cuda")
        with pytest.raises(ValueError, match=r"generator lives on cpu but device='cuda'"):
            S.Dyck().sample(3, generator=torch.Generator(), device="cuda")
    # An int seed on a TokenDataset is a CPU generator seeded with it.
    ds = C.TokenDataset(torch.arange(100), n_ctx=4)
    torch.testing.assert_close(ds.sample(3, generator=5),
                               ds.sample(3, generator=torch.Generator().manual_seed(5)))


def test_dyck_validity_checker_rejects_broken_strings():
    d = S.Dyck(n_types=2, length=6, max_depth=2, bos=False)
    enc = {c: i for i, c in enumerate(d.vocab)}

    def valid(s: str) -> bool:
        return bool(d.is_valid(torch.tensor([[enc[c] for c in s]]))[0])

    assert valid("([])()") and valid("()()[]")
    assert not valid("([)]()")        # crossed kinds
    assert not valid("(((())")        # unbalanced
    assert not valid(")(()()")        # closes before opening
    assert not valid("((()))")        # deeper than max_depth=2


def test_dyck_score_perfect_and_uniform_models():
    d = S.Dyck(n_types=2, length=16)
    t = d.sample(512, generator=0, device="cpu")
    perfect = d.next_token_probs(t).clamp(min=1e-9).log()
    logits = torch.cat([perfect, torch.zeros(512, 1, d.d_vocab)], dim=1)
    s = d.score(logits, t)
    assert s.loss == pytest.approx(s.optimal_loss, rel=0.05)
    assert s.valid_mass == pytest.approx(1) and s.valid_argmax == 1
    assert s.closer_accuracy == 1 and s.forced_accuracy == 1
    u = d.score(torch.zeros(512, 17, d.d_vocab), t)
    assert u.loss == pytest.approx(math.log(d.d_vocab)) and u.valid_mass < 0.6


def test_dyck_errors(user_errors):
    with pytest.raises(ValueError, match="length must be even"):
        S.Dyck(length=7)
    with pytest.raises(ValueError, match=r"p_open must lie in \(0, 1\), got 1"):
        S.Dyck(p_open=1)
    d = S.Dyck(length=4)
    with pytest.raises(ValueError, match="rows must be length \\+ bos = 5 tokens long, got 4"):
        d.is_valid(torch.zeros(1, 4, dtype=torch.long))
    bad = torch.tensor([[4, 0, 3, 0, 2]])
    with pytest.raises(ValueError, match="row 0 is not a valid 2-Dyck sequence"):
        d.score(torch.zeros(1, 5, 5), bad)
