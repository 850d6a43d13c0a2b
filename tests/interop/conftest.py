"""The interop tier: tests against the real SAELens (and TransformerLens 3.9, which it pins).

`make test` runs this folder in `.venv-saelens`. It never skips for a missing library: an
environment without sae-lens is a broken tier, so the import below fails the run."""

import sae_lens  # noqa: F401  (a hard requirement of this tier)
