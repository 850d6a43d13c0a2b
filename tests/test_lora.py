"""superpose.lora: adapters on every weight of the three transformer families, against a model
whose weights hold W + ΔW (computed independently from A and B), merge/unmerge, the hook on the
adapter's activation, save/load, training, and bad input."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch

from superpose import gpt, lora, transformer
from superpose.gpt.corpus import TokenDataset

ALL = ["embed.W_E", "pos_embed.W_pos", "blocks.*.attn.*", "blocks.*.mlp.*", "unembed.W_U"]


def tiny_gpt(**kw) -> gpt.GPT:
    cfg = dict(d_vocab=40, n_layers=2, d_model=24, n_heads=3, n_ctx=12, tied_embeddings=False,
               seed=1)
    return gpt.GPT(gpt.GPTConfig(**{**cfg, **kw}))


def randomize(model, std=0.2, seed=0):
    """Non-zero B (a fresh adapter is the identity), so the adapters change the model."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for a in lora.adapters(model).values():
            a.B.copy_(torch.randn(a.B.shape, generator=gen) * std)


def hand_merged(model):
    """A copy of the base with ΔW = scale·B·A added to each weight, built from A and B here
    (not lora.merge): the reference the adapted forward must equal."""
    ref = copy.deepcopy(model)
    adapted = lora.adapters(model)
    lora.remove(ref)
    params = dict(ref.named_parameters())
    with torch.no_grad():
        for name, a in adapted.items():
            m = a.scale * a.B @ a.A                       # [d_out, d_in]
            prefix, _, leaf = name.rpartition(".")
            if leaf in ("W_Q", "W_K", "W_V"):
                w = params[f"{prefix}.W_QKV"][("W_Q", "W_K", "W_V").index(leaf)]
                w += m.view(w.shape)                      # [head d_head d_model] = F.linear's
            elif leaf == "W_O":
                w = params[f"{prefix}.W_O"]
                w += m.T.reshape(w.shape)
            else:      # [d_in d_out] / [rows d_model]; GPT's W_E, an unembed's W_U: top level
                key = f"{prefix}.{leaf}"
                params[key if key in params else leaf].add_(m.T)
    return ref


def tokens(n=3, p=12, vocab=40, seed=0):
    return torch.randint(0, vocab, (n, p), generator=torch.Generator().manual_seed(seed))


# ---- targets and the adapted forward --------------------------------------------------------


def test_targets_name_every_weight_as_transformerlens_does():
    m = tiny_gpt()
    names = lora.targets(m)
    assert names[:2] == ["embed.W_E", "pos_embed.W_pos"] and names[-1] == "unembed.W_U"
    for i in range(2):
        for w in ("attn.W_Q", "attn.W_K", "attn.W_V", "attn.W_O", "mlp.W_in", "mlp.W_out"):
            assert f"blocks.{i}.{w}" in names
    assert len(names) == 2 + 2 * 6 + 1
    # tied: W_U is W_E's transpose, adapting both would be ambiguous; rotary: no W_pos
    tied = lora.targets(tiny_gpt(tied_embeddings=True, positional="rotary", attn_only=True))
    assert "unembed.W_U" not in tied and "pos_embed.W_pos" not in tied
    assert not any("mlp" in n for n in tied)


def test_fresh_adapters_change_nothing_and_freeze_the_base():
    m = tiny_gpt()
    x = tokens()
    before = m(x)
    names = lora.add(m, "blocks.*.attn.W_Q", rank=4, alpha=8)
    assert names == ["blocks.0.attn.W_Q", "blocks.1.attn.W_Q"]
    assert torch.equal(m(x), before)                  # B = 0: exactly the base
    trainable = [n for n, p in m.named_parameters() if p.requires_grad]
    assert trainable == ["blocks.0.attn.lora_W_Q.A", "blocks.0.attn.lora_W_Q.B",
                         "blocks.1.attn.lora_W_Q.A", "blocks.1.attn.lora_W_Q.B"]
    a = lora.adapters(m)["blocks.0.attn.W_Q"]
    assert (a.rank, a.d_in, a.d_out, a.scale) == (4, 24, 24, 2.0)
    assert tuple(a.A.shape) == (4, 24) and tuple(a.B.shape) == (24, 4)


@pytest.mark.parametrize("switch", [None, "set_use_split_qkv_input", "set_use_attn_result",
                                    "set_use_attn_in"])
def test_adapted_forward_equals_the_hand_merged_weights(switch):
    m = tiny_gpt()
    lora.add(m, ALL, rank=3, alpha=5)
    randomize(m)
    ref = hand_merged(m)
    for model in (m, ref):
        if switch:
            getattr(model, switch)(True)
    x = tokens()
    torch.testing.assert_close(m(x), ref(x), rtol=0, atol=2e-5)
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, :4] = False                              # left padding: positions from the mask
    torch.testing.assert_close(m(x, attention_mask=mask), ref(x, attention_mask=mask),
                               rtol=0, atol=2e-5)


def test_encoder_and_seq2seq_adapters_equal_hand_merged_weights():
    enc = transformer.Encoder(transformer.EncoderConfig(
        d_vocab=30, n_layers=2, d_model=16, n_heads=2, n_ctx=10, tied_embeddings=False,
        n_classes=3, n_token_types=2))
    heads = ["mlm_head.W", "pooler.W", "classifier.W", "unembed.W_U"]
    tables = ["embed.embed.W_E", "embed.pos_embed.W_pos", "embed.token_type_embed.W_token_type"]
    assert set(heads + tables) <= set(lora.targets(enc))
    names = lora.add(enc, ["blocks.*.*", *heads, *tables], rank=2)
    assert len(names) == 2 * 6 + 4 + 3
    randomize(enc)
    x = tokens(2, 10, 30)
    types = (torch.arange(10) >= 5).long().expand(2, 10)
    ref = hand_merged(enc)
    torch.testing.assert_close(enc(x, token_type_ids=types), ref(x, token_type_ids=types),
                               rtol=0, atol=2e-5)
    torch.testing.assert_close(enc(x, return_type="class_logits"),
                               ref(x, return_type="class_logits"), rtol=0, atol=2e-5)

    s2s = transformer.Seq2Seq(transformer.Seq2SeqConfig(
        d_vocab=30, d_vocab_tgt=20, n_layers=1, d_model=16, n_heads=2, n_ctx=10,
        tied_embeddings=False))
    assert "decoder.0.cross_attn.W_K" in lora.targets(s2s)
    lora.add(s2s, ["decoder.*.cross_attn.*", "encoder.*.mlp.W_in", "decoder.*.attn.W_V",
                   "W_E", "W_E_tgt", "W_pos", "W_pos_tgt", "unembed.W_U"], rank=2)
    randomize(s2s)
    ref = hand_merged(s2s)
    src, tgt = tokens(2, 10, 30, seed=1), tokens(2, 7, 20, seed=2)
    torch.testing.assert_close(s2s(src, tgt), ref(src, tgt), rtol=0, atol=2e-5)
    # generation with the KV cache (cross keys/values computed once, through the adapters)
    assert torch.equal(s2s.generate(src, max_new_tokens=5, bos_id=1),
                       ref.generate(src, max_new_tokens=5, bos_id=1))
    for model, run in ((s2s, lambda m: m(src, tgt)), (enc, lambda m: m(x))):
        before = {k: t.clone() for k, t in model.state_dict().items()}
        want = run(model)
        lora.merge(model)
        torch.testing.assert_close(run(model), want, rtol=0, atol=2e-5)
        lora.unmerge(model)
        assert all(torch.equal(model.state_dict()[k], t) for k, t in before.items())


def test_hook_act_is_x_at_A_and_steers_the_adapter():
    m = tiny_gpt()
    lora.add(m, ["blocks.0.attn.W_Q", "blocks.1.mlp.W_out"], rank=4)
    randomize(m)
    x = tokens()
    name = lora.hook_name("blocks.0.attn.W_Q")
    assert name == "blocks.0.attn.lora_W_Q.hook_act"
    assert lora.hook_name("embed.W_E") == "lora_W_E.hook_act"
    _, cache = m.run_with_cache(x)
    ln = m.blocks[0].ln1
    h = cache["blocks.0.ln1.hook_normalized"] * ln.w + ln.b
    a = lora.adapters(m)["blocks.0.attn.W_Q"]
    torch.testing.assert_close(cache[name], h @ a.A.T, rtol=1e-5, atol=1e-5)
    post = cache["blocks.1.mlp.hook_post"]
    out_act = cache[lora.hook_name("blocks.1.mlp.W_out")]
    torch.testing.assert_close(out_act, post @ lora.adapters(m)["blocks.1.mlp.W_out"].A.T,
                               rtol=1e-5, atol=1e-5)
    # zeroing every adapter's activation gives the base model back
    base = copy.deepcopy(m)
    lora.remove(base)
    zero = [(lora.hook_name(n), lambda t, hook: torch.zeros_like(t))
            for n in lora.adapters(m)]
    torch.testing.assert_close(m.run_with_hooks(x, fwd_hooks=zero), base(x), rtol=0, atol=1e-6)


# ---- merge / unmerge / remove ---------------------------------------------------------------


def test_merge_equals_adapters_and_unmerge_restores_the_base_bit_for_bit():
    m = tiny_gpt()
    base_state = {k: t.clone() for k, t in m.state_dict().items()}
    lora.add(m, ALL, rank=4)
    randomize(m)
    x = tokens()
    adapted = m(x)
    lora.merge(m)
    assert lora.is_merged(m)
    torch.testing.assert_close(m(x), adapted, rtol=0, atol=2e-5)
    # what merge added is exactly lora.delta, in the weight's TL layout
    w_q = m.blocks[0].attn.W_Q
    torch.testing.assert_close(w_q - base_state["blocks.0.attn.W_QKV"][0].transpose(-1, -2),
                               lora.delta(m, "blocks.0.attn.W_Q"), rtol=0, atol=1e-6)
    assert lora.delta(m, "blocks.0.attn.W_Q").shape == w_q.shape
    lora.unmerge(m)
    for k, t in base_state.items():
        assert torch.equal(m.state_dict()[k], t), k
    assert torch.equal(m(x), adapted)


def test_merged_model_moves_and_unmerges_on_another_dtype():
    """merge keeps its backup as a buffer: .to() moves it with the weights (here a dtype
    change, the CPU stand-in for a device move), so unmerge still restores the base."""
    m = tiny_gpt()
    base = {k: t.double() for k, t in m.state_dict().items()}
    lora.add(m, ["blocks.*.attn.W_K", "unembed.W_U"], rank=2)
    randomize(m)
    lora.merge(m)
    m.double()
    lora.unmerge(m)
    for k, t in base.items():
        assert torch.equal(m.state_dict()[k], t), k


def test_merge_then_remove_bakes_the_fine_tune_in_and_remove_restores_training():
    m = tiny_gpt()
    lora.add(m, "blocks.*.mlp.W_in", rank=2)
    randomize(m)
    x = tokens()
    adapted = m(x)
    lora.merge(m)
    assert lora.remove(m) == ["blocks.0.mlp.W_in", "blocks.1.mlp.W_in"]
    assert lora.adapters(m) == {} and "lora" not in " ".join(m.hook_dict)
    torch.testing.assert_close(m(x), adapted, rtol=0, atol=2e-5)
    assert all(p.requires_grad for p in m.parameters())


def test_merge_refusals_leave_the_weights_alone(user_errors):
    m = tiny_gpt()
    with pytest.raises(ValueError, match="no LoRA adapters to merge"):
        lora.merge(m)
    lora.add(m, "blocks.0.attn.W_V", rank=2)
    randomize(m)
    with pytest.raises(ValueError, match="not merged"):
        lora.unmerge(m)
    lora.merge(m)
    state = {k: t.clone() for k, t in m.state_dict().items()}
    with pytest.raises(ValueError, match="merging twice"):
        lora.merge(m)
    with pytest.raises(ValueError, match="merged into its weights"):
        lora.add(m, "blocks.1.attn.W_V")
    with pytest.raises(ValueError, match="lora.unmerge"):
        gpt.train(m, TokenDataset(tokens(1, 200).flatten(), 8), steps=1, batch_size=2,
                  progress=False)
    for k, t in state.items():
        assert torch.equal(m.state_dict()[k], t), k
    with torch.no_grad():
        m.blocks[0].attn.W_V[0, 0, 0] += 1.0       # an edit after the merge
    with pytest.raises(ValueError, match="changed since lora.merge"):
        lora.unmerge(m)


# ---- bad input ------------------------------------------------------------------------------


def test_bad_adapter_settings_name_the_problem(user_errors):
    m = tiny_gpt()
    with pytest.raises(ValueError, match="rank"):
        lora.add(m, "blocks.0.attn.W_Q", rank=0)
    with pytest.raises(ValueError, match=r"above min\(d_in, d_out\) = min\(24, 24\)"):
        lora.add(m, "blocks.0.attn.W_Q", rank=25)
    with pytest.raises(ValueError, match="close matches: .*blocks.0.attn.W_Q"):
        lora.add(m, "blocks.0.attn.WQ")
    with pytest.raises(ValueError, match="lora.targets"):
        lora.add(m, "blocks.9.attn.W_Q")
    with pytest.raises(ValueError, match="alpha"):
        lora.add(m, "blocks.0.attn.W_Q", alpha=0)
    with pytest.raises(ValueError, match="dropout"):
        lora.add(m, "blocks.0.attn.W_Q", dropout=1.0)
    with pytest.raises(ValueError, match="targets must be"):
        lora.add(m, [])
    assert lora.adapters(m) == {}                     # nothing attached by a failed call
    assert all(p.requires_grad for p in m.parameters())
    lora.add(m, "blocks.0.attn.W_Q")
    with pytest.raises(ValueError, match="already has an adapter"):
        lora.add(m, "blocks.*.attn.W_Q")
    with pytest.raises(ValueError, match="no adapter on 'blocks.1.attn.W_Q'"):
        lora.delta(m, "blocks.1.attn.W_Q")
    with pytest.raises(TypeError, match="Linear has no weights LoRA can adapt"):
        lora.add(torch.nn.Linear(3, 3), "weight")


# ---- save / load ----------------------------------------------------------------------------


def test_save_load_roundtrip_separate_from_the_base(tmp_path):
    m = tiny_gpt()
    lora.add(m, ["blocks.*.attn.W_Q", "blocks.*.attn.W_V"], rank=4, alpha=8, dropout=0.1)
    lora.add(m, "blocks.1.mlp.W_out", rank=2)
    randomize(m)
    m.eval()
    x = tokens()
    want = m(x)
    lora.save(m, tmp_path / "ad")
    assert sorted(p.name for p in (tmp_path / "ad").iterdir()) == [
        "adapter_config.json", "adapter_model.safetensors"]
    cfg = json.loads((tmp_path / "ad" / "adapter_config.json").read_text())
    assert cfg["adapters"]["blocks.1.mlp.W_out"] == {"rank": 2, "alpha": 2.0, "dropout": 0.0}
    assert cfg["adapters"]["blocks.0.attn.W_Q"]["dropout"] == 0.1
    fresh = tiny_gpt()
    assert lora.load(fresh, tmp_path / "ad") == list(lora.adapters(m))
    fresh.eval()
    assert torch.equal(fresh(x), want)
    # saved while merged: the same adapters
    lora.merge(m)
    lora.save(m, tmp_path / "merged")
    again = tiny_gpt()
    lora.load(again, tmp_path / "merged")
    again.eval()
    assert torch.equal(again(x), want)


def test_load_refuses_another_base_and_broken_folders(tmp_path, user_errors):
    m = tiny_gpt()
    lora.add(m, "blocks.*.attn.W_Q", rank=2)
    randomize(m)
    lora.save(m, tmp_path / "ad")
    with pytest.raises(ValueError, match="another config .*d_model: saved 24 vs this model 30"):
        lora.load(tiny_gpt(d_model=30), tmp_path / "ad")
    with pytest.raises(ValueError, match="for a GPT, not a Encoder"):
        lora.load(transformer.Encoder(transformer.EncoderConfig(
            d_vocab=40, n_layers=2, d_model=24, n_heads=3, n_ctx=12)), tmp_path / "ad")
    other = tiny_gpt()                                # same config, other weights
    with torch.no_grad():
        other.blocks[1].mlp.W_out[3, 4] += 0.01
    with pytest.raises(ValueError, match="other weights"):
        lora.load(other, tmp_path / "ad")
    assert lora.adapters(other) == {}
    lora.load(other, tmp_path / "ad", check_weights=False)
    with pytest.raises(ValueError, match="already has adapters"):
        lora.load(other, tmp_path / "ad", check_weights=False)
    with pytest.raises(FileNotFoundError, match="no adapter folder"):
        lora.load(tiny_gpt(), tmp_path / "nothing")
    w = tmp_path / "ad" / "adapter_model.safetensors"
    w.write_bytes(w.read_bytes()[:-10])
    with pytest.raises(ValueError, match="does not match the hash"):
        lora.load(tiny_gpt(), tmp_path / "ad")
    (tmp_path / "ad" / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="corrupt"):
        lora.load(tiny_gpt(), tmp_path / "ad")
    w.unlink()
    with pytest.raises(ValueError, match="adapter_model.safetensors is missing"):
        lora.load(tiny_gpt(), tmp_path / "ad")


# ---- training -------------------------------------------------------------------------------


def corpus_data(n_ctx=12, seed=0):
    gen = torch.Generator().manual_seed(seed)
    # a learnable stream: a repeating pattern with noise
    base = torch.arange(2000) % 7 + 3
    noise = torch.randint(0, 40, (2000,), generator=gen)
    keep = torch.rand(2000, generator=gen) < 0.9
    return TokenDataset(torch.where(keep, base, noise), n_ctx)


def test_gpt_train_fine_tunes_only_the_adapters(tmp_path):
    m = tiny_gpt()
    base = {k: t.clone() for k, t in m.state_dict().items()}
    lora.add(m, ["blocks.*.attn.W_Q", "blocks.*.attn.W_V", "blocks.*.mlp.W_out"], rank=4,
             alpha=8)
    res = gpt.train(m, corpus_data(), steps=40, batch_size=8, lr=1e-2, warmup_steps=2,
                    out=tmp_path / "run", checkpoint_every=20, progress=False)
    assert res.history.loss[-1] < res.history.loss[0] - 0.3
    for k, t in base.items():                         # the base never moved
        assert torch.equal(m.state_dict()[k], t), k
    assert all(float(a.B.detach().abs().max()) > 0 for a in lora.adapters(m).values())
    # the optimizer state in the checkpoint covers the adapters only
    from safetensors.torch import load_file
    ckpt = sorted((tmp_path / "run").glob("checkpoint-*"))[-1]
    opt = {k: v for k, v in load_file(str(ckpt / "optimizer.safetensors")).items()}
    n_adapter = sum(p.numel() for p in m.parameters() if p.requires_grad)
    assert sum(t.numel() for k, t in opt.items() if "exp_avg" in k) == 2 * n_adapter


def test_resumed_lora_fine_tune_equals_an_uninterrupted_one(tmp_path):
    def run(steps, out, resume=False, model=None):
        m = model or tiny_gpt()
        if model is None:
            lora.add(m, "blocks.*.attn.*", rank=2, dropout=0.1)
        gpt.train(m, corpus_data(), steps=steps, batch_size=4, lr=5e-3, warmup_steps=0,
                  out=out, checkpoint_every=3, resume=resume, progress=False)
        return m

    whole = run(6, tmp_path / "a")
    run(6, tmp_path / "b")
    import shutil
    shutil.rmtree(tmp_path / "b" / "checkpoint-00000006")    # interrupted after step 3
    fresh = tiny_gpt()
    lora.add(fresh, "blocks.*.attn.*", rank=2, dropout=0.1)
    resumed = run(6, tmp_path / "b", resume=True, model=fresh)
    for (k, a), b in zip(whole.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), k


def test_train_mlm_fine_tunes_only_encoder_adapters():
    enc = transformer.Encoder(transformer.EncoderConfig(d_vocab=30, n_layers=1, d_model=16,
                                                        n_heads=2, n_ctx=10))
    base = {k: t.clone() for k, t in enc.state_dict().items()}
    lora.add(enc, "blocks.0.attn.W_V", rank=2)
    from superpose.gpt.tokenizers import CharTokenizer
    from superpose.transformer.data import SpecialTokenizer
    tok = SpecialTokenizer(CharTokenizer.fit("abcdefgh ij"))
    enc2 = transformer.Encoder(transformer.EncoderConfig(
        d_vocab=tok.vocab_size, n_layers=1, d_model=16, n_heads=2, n_ctx=10))
    lora.add(enc2, "blocks.0.attn.W_V", rank=2)
    base = {k: t.clone() for k, t in enc2.state_dict().items()}
    transformer.train_mlm(enc2, "abc defg hij " * 40, tok, transformer.TrainConfig(
        steps=5, batch_size=4, lr=1e-2), progress=False)
    changed = [k for k, t in base.items() if not torch.equal(enc2.state_dict()[k], t)]
    assert changed and all(".lora_" in k for k in changed)


@pytest.mark.science
def test_lora_fine_tune_under_torchrun_matches_one_process(tmp_path, root):
    """DDP: 2 gloo processes, each with half of every batch, fine-tune the adapters exactly as
    one process does with the whole batch."""
    script = tmp_path / "ddp_lora.py"
    script.write_text(DDP_SCRIPT)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(root)}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(script), str(tmp_path / "two")], capture_output=True, text=True, env=env,
        timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc1 = subprocess.run([sys.executable, str(script), str(tmp_path / "one")],
                           capture_output=True, text=True, env=env, timeout=240)
    assert proc1.returncode == 0, proc1.stderr[-3000:]
    one, two = tiny_gpt(), tiny_gpt()
    lora.load(one, tmp_path / "one")
    lora.load(two, tmp_path / "two")
    for (k, a), b in zip(one.state_dict().items(), two.state_dict().values()):
        torch.testing.assert_close(b, a, rtol=0, atol=1e-5, msg=k)
    assert float(lora.adapters(one)["blocks.0.attn.W_Q"].B.detach().abs().max()) > 0


DDP_SCRIPT = '''
import sys
import torch
from superpose import gpt, lora
from superpose.gpt import distributed
from superpose.gpt.corpus import TokenDataset

m = gpt.GPT(gpt.GPTConfig(d_vocab=40, n_layers=2, d_model=24, n_heads=3, n_ctx=12,
                          tied_embeddings=False, seed=1))
lora.add(m, ["blocks.*.attn.W_Q", "blocks.*.mlp.W_in"], rank=2)
data = TokenDataset(torch.arange(2000) % 7 + 3, 12)
gpt.train(m, data, steps=4, batch_size=8, grad_accum=2, lr=1e-2, warmup_steps=0,
          device="cpu", progress=False)
if distributed.current().is_main:
    lora.save(m, sys.argv[1])
'''


def test_save_and_conversions_refuse_to_drop_adapters(tmp_path, user_errors):
    m = tiny_gpt()
    lora.add(m, "blocks.0.mlp.W_in", rank=2)
    with pytest.raises(ValueError, match="model.save would drop .*lora.save"):
        m.save(tmp_path / "m")
    from superpose.gpt.bridge import to_transformer_bridge
    with pytest.raises(ValueError, match="to_transformer_bridge .*lora.merge"):
        to_transformer_bridge(m)
    assert not (tmp_path / "m").exists()
    randomize(m)
    x = tokens()
    want = m(x)
    lora.merge(m)
    lora.remove(m)                                    # baked in: a plain GPT again
    m.save(tmp_path / "m")
    torch.testing.assert_close(gpt.GPT.load(tmp_path / "m")(x), want, rtol=0, atol=2e-5)
