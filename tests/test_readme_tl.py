"""The README's TransformerLens block runs as written (on 4.x; on 3.x its commented
HookedTransformer lines replace the bridge line, as the comment says)."""

from __future__ import annotations

from pathlib import Path

import transformer_lens

README = Path(__file__).resolve().parents[1] / "README.md"


def tl_block() -> str:
    text = README.read_text()
    start = text.index("```python\n", text.index("#### Interchangeable with TransformerLens"))
    return text[start + len("```python\n"):text.index("```\n", start + 10)]


def test_readme_transformer_lens_block_runs(monkeypatch):
    # catches: a TransformerLens tool the README promises (logit lens, head results, DLA,
    # patching, SVDInterpreter, the converters) that no longer runs on our GPT on 3.x or 4.x.
    monkeypatch.setenv("TQDM_DISABLE", "1")
    code = tl_block()
    try:
        transformer_lens.HookedTransformer  # noqa: B018  (3.x has it, 4.x raises ImportError)
        code = code.replace("ref = gpt.to_transformer_bridge(tiny)", "pass").replace(
            "# ht = gpt.to_hooked_transformer", "ht = gpt.to_hooked_transformer").replace(
            "# gpt.GPT.from_hooked_transformer", "gpt.GPT.from_hooked_transformer")
    except ImportError:
        pass
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    assert scope["lens"].shape == (3, 4, 16, 50)
    assert scope["dla"].shape == (8, 4, 16)
