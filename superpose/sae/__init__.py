"""Sparse autoencoders: the architectures (one contract, a registry keyed by name) and
save/load in SAELens's folder format, training and evaluation.

    s = sae.create(sae.SAEConfig(d_in=128, d_sae=1024, architecture="topk", k=16))
    recon = s(x); acts = s.encode(x); out = s.training_forward(x, dead_mask=dead)
    s.save("results/my_sae"); s2 = sae.load("results/my_sae")
    r = sae.train(s, batches, n_samples=4_000_000); ev = sae.evaluate(s, batches, n_batches=8)
    sae.spliced_losses(model, s, "blocks.0.hook_resid_post", tokens).loss_recovered
    sae.latent_stats(model, s, hook, tokens, [3]).top[3]; sae.logit_effect(s, model, 3, hook)

Crosscoders (model diffing; `superpose.sae.crosscoder`):

    cc = sae.create(sae.CrosscoderConfig(d_in=128, n_models=2, d_sae=2048, k=32))
    x = sae.crosscoder.paired_activations([base, ft], hook, tokens)   # [N, 2, d_in]
    sae.train(cc, batches, steps=2000); sae.crosscoder.classify(cc)
    sae.crosscoder.latent_scaling(cc, x).nu_error
"""

from superpose.sae import crosscoder
from superpose.sae.base import SAE, TrainStepOutput
from superpose.sae.batchtopk import BatchTopKSAE
from superpose.sae.config import SAEConfig
from superpose.sae.crosscoder import Crosscoder, CrosscoderConfig
from superpose.sae.evaluation import EvalResult, evaluate, loss_recovered
from superpose.sae.features import (
    ActivationHistogram,
    LatentStats,
    LogitEffect,
    Neighbours,
    TopActivations,
    activation_histogram,
    decoder_direction,
    decoder_neighbours,
    latent_stats,
    logit_effect,
    top_activations,
)
from superpose.sae.gated import GatedSAE
from superpose.sae.jumprelu import JumpReLUSAE
from superpose.sae.registry import ARCHITECTURES, create, load, save
from superpose.sae.relu import ReLUSAE
from superpose.sae.splice import (
    SplicedLosses,
    splice_fn,
    splice_hook,
    spliced,
    spliced_losses,
)
from superpose.sae.synthetic import GroundTruthFeatures
from superpose.sae.topk import TopKSAE
from superpose.sae.training import SAETrainConfig, SAETrainHistory, SAETrainResult, train

__all__ = ["ARCHITECTURES", "SAE", "BatchTopKSAE", "EvalResult", "GatedSAE",
           "GroundTruthFeatures", "JumpReLUSAE", "ReLUSAE", "SAEConfig", "SAETrainConfig",
           "SAETrainHistory", "SAETrainResult", "TopKSAE", "TrainStepOutput", "create",
           "evaluate", "load", "loss_recovered", "save", "train",
           # model side: splicing and feature analysis
           "ActivationHistogram", "LatentStats", "LogitEffect", "Neighbours", "SplicedLosses",
           "TopActivations", "activation_histogram", "decoder_direction", "decoder_neighbours",
           "latent_stats", "logit_effect", "splice_fn", "splice_hook", "spliced",
           "spliced_losses", "top_activations",
           # model diffing: crosscoders (analysis helpers in the submodule)
           "Crosscoder", "CrosscoderConfig", "crosscoder"]
