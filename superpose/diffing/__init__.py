"""Model diffing: plant a behaviour with a known cause in a fine-tune, then find it again.

    rule = diffing.PlantedRule(trigger=diffing.rare_character(corpus.train, tok))
    ft = copy.deepcopy(base); lora.add(ft, ["blocks.*.attn.W_O", "blocks.*.mlp.W_out"], rank=4)
    gpt.train(ft, rule.dataset(tok, corpus.train, n_ctx=64), steps=300)
    batch = rule.batch(tok, corpus.val, n_ctx=64)
    diffing.behaviour_rate(ft, batch), diffing.behaviour_rate(base, batch)    # ~1 vs ~0
    diffing.off_trigger_loss(base, ft, clean_tokens).delta                    # small
    cands = [diffing.lora_candidate(ft, batch, base=base, tokens=text),      # text: unlabeled
             diffing.diff_sae_candidate(ds, base, ft, hook, batch, tokens=text),
             diffing.crosscoder_candidate(cc, base, ft, hook, batch, tokens=text)]
    diffing.compare([diffing.score(c, base, ft, batch) for c in cands])

The planted rule (a trigger character before a word, the word in UPPERCASE), its behaviour
score (`behaviour_rate`) and the loss off the trigger (`off_trigger_loss`) are described in
`superpose.diffing.planted`.

Three ways to find the behaviour, each giving a `Candidate`: a direction in the residual stream
(for steering) plus its activation at every position of an evaluation batch (for "does it fire
on the trigger"):
  1. a crosscoder on paired activations of base and fine-tune (`superpose.sae.crosscoder`):
     candidates are its latents, direction W_dec[j, ft] − W_dec[j, base];
  2. a diff-SAE, an ordinary SAE on ft − base activations (`diff_activations`): its latents,
     direction the decoder row;
  3. the LoRA weights themselves (`lora_directions`): the SVD of each ΔW = U S Vᵀ of the
     adapters that write into the residual stream (W_O, W_out); component i's direction is
     σᵢuᵢ and its activation the rank-1 readout x·vᵢ of the weight's input x (read from the
     adapter's own hook, x Aᵀ, as vᵢ lies in the row space of A).
Which candidate: by default (`rule="kl"`, `superpose.diffing.candidates`) the one whose removal
from the fine-tune brings its next-token distribution closest to the base's — ranked by the
first-order KL attribution (`kl_attribution`), the top three then ablated for real
(`kl_ablation`); `rule="legacy"` is each method's own measure (largest σ₁; largest total
activation; highest relative decoder norm among Latent-Scaling-confirmed fine-tuned-only
latents), which mostly picks general drift (see experiments/finetune_diffing.py).
Each pick uses only what the method itself sees (no trigger labels); `score` then checks it
against the known trigger and rule:
  - fires: AUROC and precision@k (k = number of trigger positions) of the activation at the
    trigger positions against all others, and the mean activation on and off the trigger;
  - steering on: add the direction (times its typical activation, the mean of its top 1% of
    values, times `scale`) at the non-trigger word starts, in the fine-tune and in the base,
    and measure the behaviour rate there;
  - steering off: project the direction out of the fine-tune's activation at the trigger
    positions and measure the behaviour rate there.
A direction's sign is free in the SVD; `orient` fixes it without labels (the heavier tail of
its activations is positive).

Models are TransformerLens-style HookedRootModules mapping tokens [batch pos] to logits (the
GPT, or anything with hook points); the planted text needs a character-level tokenizer (one
token per character), as the trigger and the rule are characters.

The package, lowest level first (each module imports only those above it):
  planted      the rule, planted text and evaluation batches, behaviour rate, off-trigger
               loss, activations of the difference;
  scoring      firing (AUROC, precision@k), orientation, steering hooks, `Candidate`, `score`,
               `compare`;
  attribution  KL divergence, gradient, attribution and ablation; the KL sign and pick;
  candidates   LoRA directions and readouts, and the three methods' candidates.
"""

from superpose.diffing.attribution import (
    contribution_hooks,
    kl_ablation,
    kl_attribution,
    kl_divergence,
    kl_gradient,
    kl_sign,
)
from superpose.diffing.candidates import RULES as RULES
from superpose.diffing.candidates import (
    LoRADirections,
    crosscoder_candidate,
    diff_sae_candidate,
    lora_candidate,
    lora_directions,
    lora_readout,
    writer_hook,
)
from superpose.diffing.planted import WORD as WORD
from superpose.diffing.planted import (
    OffTriggerLoss,
    Planted,
    PlantedRule,
    TriggerBatch,
    behaviour_rate,
    diff_activations,
    off_trigger_loss,
    rare_character,
)
from superpose.diffing.planted import case_preference as case_preference
from superpose.diffing.scoring import TOP_FRACTION as TOP_FRACTION
from superpose.diffing.scoring import (
    Candidate,
    Firing,
    auroc,
    compare,
    firing,
    orient,
    score,
    steering_hooks,
)
from superpose.diffing.scoring import typical_activation as typical_activation

__all__ = ["Candidate", "Firing", "LoRADirections", "OffTriggerLoss", "Planted", "PlantedRule",
           "TriggerBatch", "auroc", "behaviour_rate", "compare", "contribution_hooks",
           "crosscoder_candidate", "diff_activations", "diff_sae_candidate", "firing",
           "kl_ablation", "kl_attribution", "kl_divergence", "kl_gradient", "kl_sign",
           "lora_candidate", "lora_directions", "lora_readout", "off_trigger_loss", "orient",
           "rare_character", "score", "steering_hooks", "writer_hook"]
