"""superpose.diffing: the planted rule's data, the scores on constructed inputs, the steering
hooks, diff activations, LoRA directions and readouts, and the errors."""

from __future__ import annotations

import copy

import pytest
import torch

from superpose import _validate as v
from superpose import diffing, gpt, lora, sae

TEXT = ("def parse(value, default=None):\n    return value or default  # keep it\n"
        "class Thing:\n    the name is $ here; x = y_z + 42 and more words follow\n") * 6
TOK = gpt.CharTokenizer.fit(TEXT + "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz~")


def small_gpt(seed: int = 0) -> gpt.GPT:
    cfg = gpt.GPTConfig(d_vocab=TOK.vocab_size, n_layers=2, d_model=16, n_heads=2, n_ctx=16,
                        seed=seed)
    return gpt.GPT(cfg, device="cpu").eval()


def test_rare_character_is_least_frequent_punctuation():
    assert diffing.rare_character(TEXT, TOK) == "~"          # in the vocabulary, 0 times
    text = "a$$b##c!"
    tok = gpt.CharTokenizer.fit(text)
    assert diffing.rare_character(text, tok) == "!"


def test_plant_inserts_trigger_and_uppercases_only_that_word():
    rule = diffing.PlantedRule("~", rate=0.5)
    p = rule.plant(TEXT, seed=3)
    assert p.trigger_pos and p.n_words > len(p.trigger_pos)
    for pos, n in zip(p.trigger_pos, p.word_len):
        assert p.text[pos] == "~"
        word = p.text[pos + 1:pos + 1 + n]
        assert word.isupper() and word.isalpha()
        assert not (p.text[pos + 1 + n:pos + 2 + n].isalnum())   # the whole word
    # undoing the rule gives the original text back: nothing else changed
    undone, last = [], 0
    for pos, n in zip(p.trigger_pos, p.word_len):
        undone += [p.text[last:pos], p.text[pos + 1:pos + 1 + n].lower()]
        last = pos + 1 + n
    undone.append(p.text[last:])
    assert "".join(undone) == TEXT
    assert p.text.count("~") == len(p.trigger_pos)
    # the same seed plants the same; rate 1 triggers every word of >= min_word_len letters
    assert rule.plant(TEXT, seed=3) == p
    every = diffing.PlantedRule("~", rate=1.0, min_word_len=3).plant("a to the best x")
    assert every.text == "a to ~THE ~BEST x"


def test_plant_removes_natural_triggers():
    p = diffing.PlantedRule("$", rate=1.0).plant("a $ sign and $x")
    assert p.text.count("$") == len(p.trigger_pos) == 2      # "x" is shorter than min_word_len
    assert p.text == "a  $SIGN $AND x"


def test_batch_labels():
    rule = diffing.PlantedRule("~", rate=0.3)
    b = rule.batch(TOK, TEXT, n_ctx=16, seed=1)
    text = rule.plant(TEXT, seed=1).text
    n, p = b.tokens.shape
    flat_x, flat_y = b.tokens.flatten(), b.targets.flatten()
    assert torch.equal(flat_x[1:], flat_y[:-1])
    assert TOK.decode(flat_x) == text[: n * p]
    trig = TOK.encode("~")[0]
    assert torch.equal(b.trigger, b.tokens == trig)
    # after a trigger the next token is an uppercase letter; upper/lower name its two cases
    ys = [TOK.decode([int(t)]) for t in b.targets[b.trigger]]
    assert ys and all(c.isupper() for c in ys)
    assert [TOK.decode([int(t)]) for t in b.upper[b.trigger]] == ys
    assert [TOK.decode([int(t)]) for t in b.lower[b.trigger]] == [c.lower() for c in ys]
    # word starts: a lowercase letter begins a word after a non-word character
    for x, y in zip(b.tokens[b.word_start].tolist(), b.targets[b.word_start].tolist()):
        cx, cy = TOK.decode([x]), TOK.decode([y])
        assert cy.islower() and not (cx.isalnum() or cx == "_") and cx != "~"
    assert not bool((b.word_start & b.trigger).any())
    assert bool((b.span >= b.trigger).all()) and int(b.span.sum()) > int(b.trigger.sum())
    assert int(b.word_start.sum()) > 10


def test_auroc_and_firing_on_constructed_scores():
    labels = torch.zeros(4, 10, dtype=torch.bool)
    labels[:, 3] = True
    exact = labels.float() * 2.0
    assert diffing.auroc(exact, labels) == 1.0
    assert diffing.auroc(-exact, labels) == 0.0
    assert diffing.auroc(torch.ones(4, 10), labels) == 0.5             # ties count half
    f = diffing.firing(exact, labels)
    assert f.precision_at_k == 1.0 and f.mean_on == 2.0 and f.mean_off == 0.0
    gen = torch.Generator().manual_seed(0)
    noise = torch.rand(4000, generator=gen)
    lab = torch.rand(4000, generator=gen) < 0.3
    assert abs(diffing.auroc(noise, lab) - 0.5) < 0.05
    # against sklearn-free brute force: P(pos > neg) + 0.5 P(tie)
    s = torch.tensor([0.1, 0.4, 0.4, 0.9, 0.2])
    y = torch.tensor([False, True, False, True, False])
    pos, neg = s[y], s[~y]
    brute = float(((pos[:, None] > neg).float() + 0.5 * (pos[:, None] == neg).float()).mean())
    assert diffing.auroc(s, y) == pytest.approx(brute)


def test_orient_and_typical_activation():
    s = torch.zeros(1000)
    s[:10] = -5.0
    s[10:20] = 1.0
    assert diffing.orient(s) == -1 and diffing.orient(-s) == 1
    t = torch.arange(100.0)
    assert diffing.typical_activation(t, 0.05) == pytest.approx(97.0)


def test_steering_hooks_change_exactly_the_masked_positions():
    model = small_gpt()
    tokens = TOK.encode(TEXT[:64]).view(4, 16)
    hook = "blocks.1.hook_resid_post"
    mask = torch.zeros(4, 16, dtype=torch.bool)
    mask[1, 5] = mask[3, 0] = True
    d = torch.randn(16, generator=torch.Generator().manual_seed(1))
    _, clean = model.run_with_cache(tokens, names_filter=hook)
    for mode in ("add", "ablate"):
        (name, factory), = diffing.steering_hooks(hook, d, mask, mode, scale=2.0)
        seen: dict[str, torch.Tensor] = {}
        model.run_with_hooks(tokens, fwd_hooks=[(name, factory(0, 4)),
                                                (name, lambda a, hook=None, s=seen: s.update(x=a))])
        x, c = seen["x"], clean[hook]
        assert torch.equal(x[~mask], c[~mask])
        if mode == "add":
            torch.testing.assert_close(x[mask], c[mask] + 2.0 * d)
        else:
            torch.testing.assert_close(x[mask] @ (d / d.norm()), torch.zeros(2),
                                       atol=1e-5, rtol=0)
    # the factory takes the forward's chunk: rows [2, 4) of the mask
    (name, factory), = diffing.steering_hooks(hook, d, mask, "add")
    seen = {}
    model.run_with_hooks(tokens[2:], fwd_hooks=[(name, factory(2, 2)),
                                                (name, lambda a, hook=None: seen.update(x=a))])
    assert torch.equal(seen["x"][0], clean[hook][2])
    torch.testing.assert_close(seen["x"][1, 0], clean[hook][3, 0] + d)


def test_behaviour_rate_with_a_planted_logit_hook():
    model = small_gpt()
    rule = diffing.PlantedRule("~", rate=0.3)
    b = rule.batch(TOK, TEXT, n_ctx=16, seed=1)
    # a hook on the logits that makes every uppercase letter win: the rate becomes 1
    upper_ids = TOK.encode("ABCDEFGHIJKLMNOPQRSTUVWXYZ")

    def boost(start, rows):
        def hook(x, hook=None):
            x = x.clone()
            x[..., upper_ids] += 100.0
            return x
        return hook

    assert diffing.behaviour_rate(model, b, "trigger",
                                  fwd_hooks=[("unembed.hook_out", boost)]) == 1.0
    assert diffing.behaviour_rate(model, b, "word_start",
                                  fwd_hooks=[("unembed.hook_out", boost)]) == 1.0
    r = diffing.behaviour_rate(model, b, "word_start")
    assert 0.0 <= r <= 1.0


def test_off_trigger_loss_and_diff_activations():
    base = small_gpt()
    ft = copy.deepcopy(base)
    tokens = TOK.encode(TEXT[:128]).view(8, 16)
    same = diffing.off_trigger_loss(base, ft, tokens)
    assert same.delta == 0.0 and same.base > 0
    hook = "blocks.0.hook_resid_post"
    assert float(diffing.diff_activations(base, ft, hook, tokens).abs().max()) == 0.0
    with torch.no_grad():
        # (a constant shift would be removed by the LayerNorms: perturb at random)
        ft.blocks[0].mlp.W_out.add_(0.1 * torch.randn(ft.blocks[0].mlp.W_out.shape,
                                                      generator=torch.Generator().manual_seed(0)))
    d = diffing.diff_activations(base, ft, hook, tokens, batch_size=3)
    _, cb = base.run_with_cache(tokens, names_filter=hook)
    _, cf = ft.run_with_cache(tokens, names_filter=hook)
    torch.testing.assert_close(d, (cf[hook] - cb[hook]).reshape(-1, 16))
    assert diffing.off_trigger_loss(base, ft, tokens).delta != 0.0


def adapted(seed: int = 0) -> tuple[gpt.GPT, gpt.GPT]:
    base = small_gpt()
    ft = copy.deepcopy(base)
    lora.add(ft, ["blocks.*.mlp.W_out", "blocks.0.attn.W_Q"], rank=3, alpha=6, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for ad in lora.adapters(ft).values():
            ad.B.copy_(torch.randn(ad.B.shape, generator=gen))
    return base, ft


def test_lora_directions_and_readout():
    _, ft = adapted()
    dirs = diffing.lora_directions(ft)
    assert set(dirs) == set(lora.adapters(ft))
    tokens = TOK.encode(TEXT[:64]).view(4, 16)
    for w, d in dirs.items():
        dw = lora.delta_matrix(ft, w).detach()
        torch.testing.assert_close(d.U * d.S @ d.V.T, dw, atol=1e-4, rtol=1e-4)
        assert bool((d.S[:-1] >= d.S[1:]).all())
        torch.testing.assert_close(d.V.T @ d.V, torch.eye(d.S.numel()), atol=1e-4, rtol=0)
    # the readout equals the weight's input projected on v1
    w = "blocks.1.mlp.W_out"
    r = diffing.lora_readout(ft, w, tokens, component=1)
    _, cache = ft.run_with_cache(tokens, names_filter="blocks.1.mlp.hook_post")
    torch.testing.assert_close(r, cache["blocks.1.mlp.hook_post"] @ dirs[w].V[:, 1],
                               atol=1e-4, rtol=1e-4)
    assert diffing.writer_hook(w) == "blocks.1.hook_mlp_out"
    assert diffing.writer_hook("blocks.0.attn.W_O") == "blocks.0.hook_attn_out"
    assert diffing.writer_hook("blocks.0.attn.W_Q") is None


def test_candidates_and_score_end_to_end_on_tiny_models():
    base, ft = adapted()
    rule = diffing.PlantedRule("~", rate=0.3)
    b = rule.batch(TOK, TEXT, n_ctx=16, seed=1)
    c = diffing.lora_candidate(ft, b)
    assert c.method == "lora" and c.hook_name.endswith("hook_mlp_out")
    assert c.activation.shape == b.tokens.shape and c.direction.shape == (16,)
    row = diffing.score(c, base, ft, b, scales=(1.0,))
    for k in ("auroc", "auroc_span", "precision_at_k", "rate_ft_trigger", "rate_ft_ablated",
              "rate_ft_steered_x1", "rate_base_steered_x1"):
        assert k in row
    hook = "blocks.1.hook_resid_post"
    ds = sae.create(sae.SAEConfig(d_in=16, d_sae=8, architecture="topk", k=2))
    cd = diffing.diff_sae_candidate(ds, base, ft, hook, b)
    assert cd.activation.shape == b.tokens.shape and bool((cd.activation >= 0).all())
    cc = sae.create(sae.CrosscoderConfig(d_in=16, n_models=2, d_sae=8, k=2))
    cx = diffing.crosscoder_candidate(cc, base, ft, hook, b)
    assert cx.info["pool"] in ("exclusive", "finetuned-only", "all")
    table = diffing.compare([row, diffing.score(cd, base, ft, b), diffing.score(cx, base, ft, b)])
    assert len(table.splitlines()) == 4 and "diff-sae" in table


def test_errors(user_errors):
    base = small_gpt()
    with pytest.raises(ValueError, match="one character"):
        diffing.PlantedRule("$$")
    with pytest.raises(ValueError, match="not a letter"):
        diffing.PlantedRule("a")
    with pytest.raises(ValueError, match="rate"):
        diffing.PlantedRule("$", rate=0.0)
    with pytest.raises(ValueError, match="not in the tokenizer's vocabulary.*rare_character"):
        diffing.PlantedRule("§").batch(TOK, TEXT, n_ctx=16)
    with pytest.raises(TypeError, match="CharTokenizer"):
        diffing.PlantedRule("~").batch(gpt.ByteTokenizer(), TEXT, n_ctx=16)
    tokens = TOK.encode(TEXT[:64]).view(4, 16)
    with pytest.raises(ValueError, match="no hook point named.*close matches"):
        diffing.diff_activations(base, copy.deepcopy(base), "blocks.1.hook_resid_pots", tokens)
    other = gpt.GPT(v.replace_config(base.cfg, {"d_model": 32}), device="cpu")
    with pytest.raises(ValueError, match="same architecture"):
        diffing.diff_activations(base, other, "blocks.1.hook_resid_post", tokens)
    with pytest.raises(ValueError, match="no LoRA adapters"):
        diffing.lora_directions(base)
    _, ft = adapted()
    with pytest.raises(ValueError, match="has no adapter.*close matches"):
        diffing.lora_directions(ft, ["blocks.1.mlp.W_ot"])
    with pytest.raises(ValueError, match="component"):
        diffing.lora_readout(ft, "blocks.1.mlp.W_out", tokens, component=7)
    with pytest.raises(ValueError, match="positives and negatives"):
        diffing.auroc(torch.ones(5), torch.zeros(5, dtype=torch.bool))
    with pytest.raises(ValueError, match="mode must be one of"):
        diffing.steering_hooks("x", torch.ones(3), torch.ones(1, 1, dtype=torch.bool), "scale")
    with pytest.raises(ValueError, match="too few"):
        diffing.PlantedRule("~").batch(TOK, "a b c", n_ctx=16)


# ---- behavioural (KL) attribution ------------------------------------------------------------

def planted_pair(sigma: float = 0.5, seed: int = 0) -> tuple[gpt.GPT, gpt.GPT]:
    """A base and a fine-tune that differs from it by exactly one rank-1 write, σ u (vᵀx), at
    blocks.1.hook_mlp_out (blocks.0.mlp.W_out's adapter writes only along the all-ones
    direction, which every LayerNorm centres away: large σ, no effect on the output)."""
    base = small_gpt()
    ft = copy.deepcopy(base)
    lora.add(ft, ["blocks.*.mlp.W_out"], rank=1, alpha=1, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    ads = lora.adapters(ft)
    with torch.no_grad():
        ads["blocks.0.mlp.W_out"].B.copy_(torch.full_like(ads["blocks.0.mlp.W_out"].B, 50.0))
        b = torch.randn(ads["blocks.1.mlp.W_out"].B.shape, generator=gen)
        b -= b.mean(0, keepdim=True)              # ⊥ all-ones: the two writes do not mix
        ads["blocks.1.mlp.W_out"].B.copy_(b / b.norm() * sigma
                                          / ads["blocks.1.mlp.W_out"].A.norm())
    return base, ft


def true_write(ft: gpt.GPT, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    w = "blocks.1.mlp.W_out"
    d = diffing.lora_directions(ft, [w])[w]
    return d.S[0] * d.U[:, 0], diffing.lora_readout(ft, w, tokens, directions=d)


def test_kl_attribution_ranks_the_write_that_makes_the_whole_difference_first():
    base, ft = planted_pair()
    tokens = TOK.encode(TEXT[:256]).view(16, 16)
    hook = "blocks.1.hook_mlp_out"
    kl = diffing.kl_divergence(base, ft, tokens)
    assert float(kl.mean()) > 1e-4 and bool((kl >= -1e-6).all())
    d, a = true_write(ft, tokens)
    # removing the write removes the whole difference: the KL drops to 0
    assert diffing.kl_ablation(base, ft, hook, tokens, d, a) == pytest.approx(
        float(kl.mean()), rel=1e-3)
    # distractors: random directions of the same size with the same and with random readouts
    gen = torch.Generator().manual_seed(3)
    rand = torch.randn(8, 16, generator=gen)
    rand = rand / rand.norm(dim=-1, keepdim=True) * d.norm()
    dirs = torch.cat([d[None], rand, 0.5 * d[None]])
    acts = torch.cat([a[..., None], a[..., None].expand(-1, -1, 4),
                      torch.randn(16, 16, 4, generator=gen) * a.std(), a[..., None]], -1)
    attr = diffing.kl_attribution(base, ft, hook, tokens, dirs, acts)
    assert int(attr.argmax()) == 0 and float(attr[0]) > 0
    # near the base the KL is quadratic, so the first-order estimate of the full ablation is
    # about twice the KL it removes; half the write gets about half the score
    assert float(attr[0]) == pytest.approx(2 * float(kl.mean()), rel=0.3)
    assert float(attr[-1]) == pytest.approx(0.5 * float(attr[0]), rel=1e-4)
    # invariant under (a, d) -> (-a, -d), linear in a; the sign flips the orientation only
    flipped = diffing.kl_attribution(base, ft, hook, tokens, -dirs[:1], -acts[..., :1])
    assert float(flipped[0]) == pytest.approx(float(attr[0]), rel=1e-5)
    g = diffing.kl_gradient(base, ft, hook, tokens)[hook]
    assert diffing.kl_sign(-a, -d, g) == -diffing.kl_sign(a, d, g)


def test_kl_attribution_matches_a_small_finite_ablation():
    base, ft = planted_pair(sigma=3.0)
    tokens = TOK.encode(TEXT[:256]).view(16, 16)
    # the planted write's direction and readout, written at the late hook (where it is the
    # whole difference) and at an early one (its effect then passes through layer 1, and
    # through attention to later positions): central differences of real ablations
    d, a = true_write(ft, tokens)
    for hook in ("blocks.1.hook_mlp_out", "blocks.0.hook_attn_out"):
        attr = float(diffing.kl_attribution(base, ft, hook, tokens, d[None], a[..., None])[0])
        eps = 0.01
        plus = diffing.kl_ablation(base, ft, hook, tokens, d, a, scale=eps)
        minus = diffing.kl_ablation(base, ft, hook, tokens, d, a, scale=-eps)
        assert abs(attr) > 1e-4
        assert (plus - minus) / (2 * eps) == pytest.approx(attr, rel=0.01)
    # the gradient at several hooks at once equals each alone (no path cut by the hooks)
    both = diffing.kl_gradient(base, ft, ["blocks.0.hook_attn_out", "blocks.1.hook_mlp_out"],
                               tokens, batch_size=5)
    one = diffing.kl_gradient(base, ft, "blocks.0.hook_attn_out", tokens)
    torch.testing.assert_close(both["blocks.0.hook_attn_out"], one["blocks.0.hook_attn_out"])


def test_kl_picks_beat_the_legacy_picks_on_a_constructed_fine_tune():
    base, ft = planted_pair()
    rule = diffing.PlantedRule("~", rate=0.3)
    b = rule.batch(TOK, TEXT, n_ctx=16, seed=1)
    tokens = TOK.encode(TEXT[:256]).view(16, 16)
    # LoRA: σ₁ picks the large but invisible all-ones write; KL the one that matters
    legacy = diffing.lora_candidate(ft, b, rule="legacy")
    assert legacy.info["weight"] == "blocks.0.mlp.W_out"
    assert diffing.lora_candidate(ft, b).info["rule"] == "legacy (no base given)"
    c = diffing.lora_candidate(ft, b, base=base, tokens=tokens)
    assert c.info["rule"] == "kl" and c.info["weight"] == "blocks.1.mlp.W_out"
    assert c.hook_name == "blocks.1.hook_mlp_out" and c.info["legacy"]["kl_rank"] >= 1
    assert c.info["component"] == 0 and c.info["sign"] in (1, -1)
    # diff-SAE: latent 0 always on along the all-ones direction (largest mass); latent 1
    # reads and writes the planted write's direction
    hook = "blocks.1.hook_resid_post"
    d, _ = true_write(ft, tokens)
    u = d / d.norm()
    ds = sae.create(sae.SAEConfig(d_in=16, d_sae=4, architecture="topk", k=4))
    with torch.no_grad():
        ds.W_enc.zero_(); ds.b_enc.zero_(); ds.b_dec.zero_()   # noqa: E702
        ds.b_enc[0] = 10.0
        ds.W_dec.zero_()
        ds.W_dec[0] = torch.ones(16) / 4.0
        for sign, j in ((1.0, 1), (-1.0, 2)):
            ds.W_enc[:, j] = sign * u
            ds.W_dec[j] = sign * u
    assert diffing.diff_sae_candidate(ds, base, ft, hook, b, rule="legacy").info["latent"] == 0
    cd = diffing.diff_sae_candidate(ds, base, ft, hook, b, tokens=tokens)
    assert cd.info["latent"] in (1, 2) and cd.info["legacy"]["latent"] == 0
    assert cd.info["sign"] == 1 and bool((cd.activation >= 0).all())
    assert set(cd.info["kl_verified"]) <= {0, 1, 2, 3}
    cc = sae.create(sae.CrosscoderConfig(d_in=16, n_models=2, d_sae=8, k=2))
    for dec in ("finetuned", "difference"):
        cx = diffing.crosscoder_candidate(cc, base, ft, hook, b, tokens=tokens, kl_decoder=dec)
        assert cx.info["rule"] == "kl" and "legacy" in cx.info
        assert cx.activation.shape == b.tokens.shape
