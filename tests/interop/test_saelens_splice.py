"""An SAE spliced into a model gives the same logits here as in SAELens: a SAELens SAE in its
own HookedSAETransformer (TransformerLens 3.9) against the same folder loaded by superpose and
spliced into our GPT with the same weights (`gpt.to_hooked_transformer` makes the pair)."""

from __future__ import annotations

import warnings

import pytest
import torch
from sae_lens import HookedSAETransformer
from test_saelens_format import build

from superpose import sae
from superpose.gpt import GPT, GPTConfig, to_hooked_transformer

pytestmark = pytest.mark.science   # the interop tier (make test-science)

D_MODEL, N_HEADS = 16, 4
HOOKS = {"blocks.0.hook_resid_post": D_MODEL, "blocks.1.attn.hook_z": D_MODEL,
         "blocks.1.hook_mlp_out": D_MODEL}


def model_pair() -> tuple[GPT, HookedSAETransformer]:
    m = GPT(GPTConfig(d_vocab=29, n_layers=2, d_model=D_MODEL, n_heads=N_HEADS, n_ctx=12,
                      init_std=0.3, seed=2), device="cpu").eval()
    ht = to_hooked_transformer(m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = HookedSAETransformer(ht.cfg)
    theirs.load_state_dict(ht.state_dict())
    return m, theirs.eval()


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "gated"])
@pytest.mark.parametrize("hook", list(HOOKS))
@pytest.mark.parametrize("error_term", [False, True])
def test_spliced_logits_equal_saelens(arch, hook, error_term, tmp_path):
    # catches: sae.spliced / splice_hook computing something other than SAELens's run_with_saes at
    # the hook (the activation not replaced by the reconstruction, hook_z not flattened to n_heads *
    # d_head and back, the error term x - recon missing or with the wrong sign), a splice left
    # attached after the with block or a no-op splice (without the error term the logits must
    # change), or a loaded SAE or converted model whose numbers differ from SAELens's.
    m, theirs = model_pair()
    flags = {"reshape_activations": "hook_z"} if hook.endswith("hook_z") else {}
    lens = build(arch, training=False, seed=3, **flags)
    lens.cfg.metadata.hook_name = hook
    if HOOKS[hook] != lens.cfg.d_in:
        pytest.fail("the helper's SAE width must match the hook")
    lens.save_model(str(tmp_path))
    ours = sae.load(tmp_path, device="cpu")
    tokens = torch.randint(0, 29, (3, 12), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        want = theirs.run_with_saes(tokens, saes=[lens], use_error_term=error_term)
        with sae.spliced(m, ours, hook, error_term=error_term):
            got = m(tokens)
        clean = m(tokens)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    if error_term:       # with the error term the model's output is unchanged
        torch.testing.assert_close(got, clean, atol=1e-5, rtol=1e-5)
    else:
        assert (got - clean).abs().max() > 1e-3
