"""TransformerLens's own hook and hook-point tests, run against our GPT (issue #11).

Adapted from TransformerLens (github.com/TransformerLensOrg/TransformerLens), snapshot commit
4cd36aaeb5dad931d085bd5d46a12b402fe15272; each source file's last commit:

- tests/unit/test_hook_points.py            abf539d61185a1b51dc14c06cfac64bc83350bdc
- tests/unit/test_hooked_root_module.py     e6f0ebb59dbbadc8554df8dd3bb6d8775fd2bc06
- tests/unit/test_hook_introspection.py     287a542c535b166bf21f2386ed4a7047f484e3a0
- tests/integration/test_hooks.py           d074617a0bcb7a0b3eaca545923c4d057a09f8e5
- tests/integration/test_cache_hook_names.py 5fc23e7cd184711c9effc40c3996a0d304a83c95
- tests/integration/test_cache_pos_slice.py 35116ff414997bf9f0da9e021e0493a2f3a77fe5
- tests/integration/test_hook_shape_compatibility.py 3efbd6eb560597a4ebea0760a3faa8b9e48097b5

Adaptation. TL builds `HookedTransformer.from_pretrained("solu-1l" / "tiny-stories-1M")`
(downloads, impossible here); we build our GPT from a GPTConfig of the same depth, with random
(non-zero) biases as in a trained model, and feed token tensors instead of strings ("Hello
World!" was 4 tokens with BOS, so PROMPT has 4). Each test's assertions are TL's. The hook-point
unit tests run on the GPT's own hook points (`superpose.hooks.FastHookPoint`, whose `__call__`
skips nn.Module's machinery when nothing is attached), not on a bare `HookPoint()`.

Every model-level test is parametrized over `kind`: "gpt" always, and "ht" (a real
`HookedTransformer` with the same config, built locally) where TransformerLens still has it
(3.x, the .venv-saelens environment). The "ht" runs check that each adaptation is right: a test
that fails there is TL's own bug (and may be skipped, with the reason), not ours.

Not taken: the legacy-import tests of test_hooked_root_module.py (they test TL's module layout,
no model; 3.9 warns, 4.x raises); test_hook_shape_compatibility's TransformerBridge boot (its
shape table is kept and applied to our cache); tests/acceptance/test_hook_tokens.py (needs
`cfg.use_hook_tokens` / `hook_tokens`, which our GPT does not have and is not planned to).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from unittest import mock

import pytest
import torch
from tl_support import HAS_HT, KINDS, HookedTransformer, ht_config, randomize
from transformer_lens import ActivationCache, HookedRootModule
from transformer_lens.hook_points import HookIntrospectionMixin, HookPoint

import superpose.gpt as sgpt
from superpose.gpt import GPT, GPTConfig

# "solu-1l" in TL's test_hooks.py / test_cache_hook_names.py: one layer, LN, MLP.
BASE = dict(d_vocab=50, n_layers=1, d_model=32, n_heads=4, n_ctx=16, seed=0)
PROMPT = torch.tensor([[1, 17, 23, 5]])   # "Hello World!" with BOS: 4 tokens


def make_model(kind: str, **kw: Any) -> Any:
    cfg = GPTConfig(**{**BASE, **kw})
    model = GPT(cfg, device="cpu") if kind == "gpt" else HookedTransformer(ht_config(cfg))
    randomize(model)
    return model.eval()


@pytest.fixture(params=KINDS)
def model(request):
    return make_model(request.param)


# =============================================================================================
# tests/unit/test_hook_points.py — on the model's own hook points
# =============================================================================================

HP_NAME = "blocks.0.hook_resid_pre"


def setup_hook_point_and_hook(model):
    hook_point = model.hook_dict[HP_NAME]

    def hook(activation, hook):
        return activation

    return hook_point, hook


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_add_hook_forward(mock_handle, model):
    mock_handle.return_value.id = 0
    hook_point, hook = setup_hook_point_and_hook(model)
    hook_point.add_hook(hook, dir="fwd")
    assert len(hook_point.fwd_hooks) == 1


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_add_hook_backward(mock_handle, model):
    mock_handle.return_value.id = 0
    hook_point, hook = setup_hook_point_and_hook(model)
    hook_point.add_hook(hook, dir="bwd")
    assert len(hook_point.bwd_hooks) == 1


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_add_hook_permanent(mock_handle, model):
    mock_handle.return_value.id = 0
    hook_point, hook = setup_hook_point_and_hook(model)
    hook_point.add_hook(hook, dir="fwd", is_permanent=True)
    assert hook_point.fwd_hooks[0].is_permanent


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_add_hook_with_level(mock_handle, model):
    mock_handle.return_value.id = 0
    hook_point, hook = setup_hook_point_and_hook(model)
    hook_point.add_hook(hook, dir="fwd", level=5)
    assert hook_point.fwd_hooks[0].context_level == 5


@mock.patch("transformer_lens.hook_points.LensHandle")
@mock.patch("torch.utils.hooks.RemovableHandle")
def test_add_hook_prepend(mock_handle, mock_lens_handle, model):
    mock_handle.id = 0
    mock_handle.next_id = 1

    hook_point, _ = setup_hook_point_and_hook(model)

    def hook1(activation, hook):
        return activation

    def hook2(activation, hook):
        return activation

    class _LensHandleBox:
        def __init__(self, handle, is_permanent, context_level, user_hook=None):
            self.hook = handle
            self.is_permanent = is_permanent
            self.context_level = context_level
            self.user_hook = user_hook

    mock_lens_handle.side_effect = _LensHandleBox

    next_id = {"val": 1}

    def fake_register_forward_hook(fn, prepend=False):
        handle = mock.MagicMock()
        handle.id = next_id["val"]
        next_id["val"] += 1
        return handle

    hook_point.register_forward_hook = fake_register_forward_hook  # type: ignore[assignment]

    hook_point.add_hook(hook1, dir="fwd")
    hook_point.add_hook(hook2, dir="fwd", prepend=True)

    assert len(hook_point.fwd_hooks) == 2
    assert hook_point.fwd_hooks[0].hook.id == 2
    assert hook_point.fwd_hooks[1].hook.id == 1


def _conversion_class():
    from transformer_lens.conversion_utils.conversion_steps.base_tensor_conversion import (
        BaseTensorConversion,
    )

    class TestHookConversion(BaseTensorConversion):
        def handle_conversion(self, input_value, *full_context):
            return input_value * 2

        def revert(self, input_value, *full_context):
            return input_value + 10

    return TestHookConversion


def test_enable_reshape(model):
    hook_point = model.hook_dict[HP_NAME]
    conversion = _conversion_class()()
    hook_point.enable_reshape(conversion)
    assert hook_point.hook_conversion is conversion


def test_enable_reshape_with_none(model):
    hook_point = model.hook_dict[HP_NAME]
    hook_point.enable_reshape(None)
    assert hook_point.hook_conversion is None


def test_reshape_functionality_integration(model):
    """convert (x2), hook (+1), revert (+10), on the model's hook point called directly and
    inside the model's forward (hook_embed feeds blocks.0.hook_resid_pre)."""
    _, clean = model.run_with_cache(PROMPT, names_filter=["hook_embed", "hook_pos_embed"])
    hook_point = model.hook_dict["hook_embed"]
    hook_point.enable_reshape(_conversion_class()())

    def test_hook(activation, hook):
        return activation + 1

    test_input = torch.tensor([1.0, 2.0, 3.0])
    hook_point.add_hook(test_hook, dir="fwd")

    result = hook_point(test_input)
    expected = torch.tensor([13.0, 15.0, 17.0])
    assert torch.equal(result, expected)

    _, cache = model.run_with_cache(PROMPT, names_filter=[HP_NAME])
    expected_resid = clean["hook_embed"] * 2 + 1 + 10 + clean["hook_pos_embed"]
    torch.testing.assert_close(cache[HP_NAME], expected_resid)


def test_reshape_functionality_hook_returns_none_integration(model):
    hook_point = model.hook_dict["hook_embed"]
    hook_point.enable_reshape(_conversion_class()())

    def test_hook(activation, hook):
        return None

    hook_point.add_hook(test_hook, dir="fwd")
    test_input = torch.tensor([1.0, 2.0, 3.0])
    result = hook_point(test_input)
    assert torch.equal(result, test_input)


class TestHookPointHasHooks:
    """TL's HookPoint.has_hooks suite, on one of the model's hook points."""

    @pytest.fixture(autouse=True)
    def _setup(self, model):
        self.hook_point = model.hook_dict[HP_NAME]

        def sample_hook(activation, hook):
            return activation

        self.sample_hook = sample_hook

    def test_no_hooks_returns_false(self):
        assert not self.hook_point.has_hooks()
        assert not self.hook_point.has_hooks(dir="fwd")
        assert not self.hook_point.has_hooks(dir="bwd")
        assert not self.hook_point.has_hooks(dir="both")

    def test_forward_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="fwd")
        assert self.hook_point.has_hooks(dir="both")
        assert not self.hook_point.has_hooks(dir="bwd")

    def test_backward_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="bwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="bwd")
        assert self.hook_point.has_hooks(dir="both")
        assert not self.hook_point.has_hooks(dir="fwd")

    def test_both_direction_hooks(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd")
        self.hook_point.add_hook(self.sample_hook, dir="bwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="fwd")
        assert self.hook_point.has_hooks(dir="bwd")
        assert self.hook_point.has_hooks(dir="both")

    def test_permanent_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True)
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(including_permanent=True)
        assert not self.hook_point.has_hooks(including_permanent=False)

    def test_non_permanent_hook_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=False)
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(including_permanent=True)
        assert self.hook_point.has_hooks(including_permanent=False)

    def test_mixed_permanent_hooks(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=False)
        assert self.hook_point.has_hooks(including_permanent=True)
        assert self.hook_point.has_hooks(including_permanent=False)

    def test_only_permanent_hooks(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", is_permanent=True)
        assert self.hook_point.has_hooks(including_permanent=True)
        assert self.hook_point.has_hooks(dir="fwd", including_permanent=True)
        assert self.hook_point.has_hooks(dir="bwd", including_permanent=True)
        assert not self.hook_point.has_hooks(including_permanent=False)
        assert not self.hook_point.has_hooks(dir="fwd", including_permanent=False)
        assert not self.hook_point.has_hooks(dir="bwd", including_permanent=False)

    def test_context_level_filtering(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=1)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=2)
        assert self.hook_point.has_hooks(level=0)
        assert self.hook_point.has_hooks(level=1)
        assert self.hook_point.has_hooks(level=2)
        assert not self.hook_point.has_hooks(level=3)
        assert not self.hook_point.has_hooks(level=-1)
        assert self.hook_point.has_hooks(level=None)

    def test_context_level_with_direction(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=1)
        assert self.hook_point.has_hooks(dir="fwd", level=0)
        assert self.hook_point.has_hooks(dir="bwd", level=1)
        assert not self.hook_point.has_hooks(dir="fwd", level=1)
        assert not self.hook_point.has_hooks(dir="bwd", level=0)

    def test_context_level_with_permanent_flags(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=1, is_permanent=False)
        assert self.hook_point.has_hooks(level=0, including_permanent=True)
        assert not self.hook_point.has_hooks(level=0, including_permanent=False)
        assert self.hook_point.has_hooks(level=1, including_permanent=True)
        assert self.hook_point.has_hooks(level=1, including_permanent=False)

    def test_all_parameters_combined(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=True)
        self.hook_point.add_hook(self.sample_hook, dir="fwd", level=1, is_permanent=False)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=0, is_permanent=False)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", level=2, is_permanent=True)
        assert self.hook_point.has_hooks(dir="fwd", level=0, including_permanent=True)
        assert not self.hook_point.has_hooks(dir="fwd", level=0, including_permanent=False)
        assert self.hook_point.has_hooks(dir="fwd", level=1, including_permanent=False)
        assert self.hook_point.has_hooks(dir="bwd", level=0, including_permanent=False)
        assert not self.hook_point.has_hooks(dir="bwd", level=1, including_permanent=False)
        assert self.hook_point.has_hooks(dir="bwd", level=2, including_permanent=True)

    def test_invalid_direction_raises_error(self):
        # TL's suite runs under beartype (its own conftest), which raises first; without that
        # checker HookPoint.has_hooks raises its own ValueError (TL 3.9 and 4.x alike).
        with pytest.raises(ValueError):
            self.hook_point.has_hooks(dir="invalid")  # type: ignore

    def test_multiple_hooks_same_criteria(self):
        for _ in range(3):
            self.hook_point.add_hook(self.sample_hook, dir="fwd", level=0, is_permanent=False)
        assert self.hook_point.has_hooks(dir="fwd", level=0, including_permanent=False)

    def test_hook_removal_affects_detection(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        self.hook_point.remove_hooks(dir="both")
        assert not self.hook_point.has_hooks()

    def test_default_parameter_values(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True, level=0)
        self.hook_point.add_hook(self.sample_hook, dir="bwd", is_permanent=False, level=1)
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="both", including_permanent=True, level=None)

    def test_edge_case_empty_after_filtering(self):
        self.hook_point.add_hook(self.sample_hook, dir="fwd", is_permanent=True, level=5)
        assert not self.hook_point.has_hooks(including_permanent=False)
        assert not self.hook_point.has_hooks(dir="bwd")
        assert not self.hook_point.has_hooks(level=0)
        assert not self.hook_point.has_hooks(dir="bwd", level=5, including_permanent=True)

    def test_functional_hook_execution_still_works(self):
        results = []

        def test_hook(activation, hook):
            results.append("hook_called")
            return activation

        self.hook_point.add_hook(test_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        test_input = torch.tensor([1.0, 2.0, 3.0])
        output = self.hook_point(test_input)
        assert torch.equal(output, test_input)
        assert "hook_called" in results

    def test_hook_point_with_conversions(self):
        def simple_hook(activation, hook):
            return activation * 2

        self.hook_point.add_hook(simple_hook, dir="fwd")
        assert self.hook_point.has_hooks()
        assert self.hook_point.has_hooks(dir="fwd")
        test_input = torch.tensor([1.0, 2.0])
        output = self.hook_point(test_input)
        expected = torch.tensor([2.0, 4.0])
        assert torch.allclose(output, expected)


# =============================================================================================
# tests/unit/test_hooked_root_module.py — the private _enable_hook* helpers, on the model
# (TL swaps mod_dict / hook_dict for Mocks; here the model's real hook points are spied on).
# =============================================================================================

def _spy(model, names: Iterable[str]) -> dict[str, mock.MagicMock]:
    spies = {}
    for name in names:
        hp = model.hook_dict[name]
        spies[name] = mock.MagicMock(wraps=hp.add_hook)
        hp.add_hook = spies[name]
    return spies


def test_enable_hook_with_name(model):
    model.context_level = 5
    spies = _spy(model, [HP_NAME])
    hook = lambda x: False  # noqa: E731
    model._enable_hook_with_name(HP_NAME, hook=hook, dir="fwd")
    assert model.mod_dict[HP_NAME] is model.hook_dict[HP_NAME]
    spies[HP_NAME].assert_called_with(hook, dir="fwd", level=5)


def test_enable_hooks_for_points(model):
    model.context_level = 5
    names = ["hook_embed", "blocks.0.attn.hook_pattern"]
    spies = _spy(model, names)
    enabled = lambda x: x == "blocks.0.attn.hook_pattern"  # noqa: E731
    hook = lambda x: False  # noqa: E731
    model._enable_hooks_for_points(
        hook_points={n: model.hook_dict[n] for n in names}.items(), enabled=enabled, hook=hook,
        dir="bwd")
    spies["blocks.0.attn.hook_pattern"].assert_called_with(hook, dir="bwd", level=5)
    spies["hook_embed"].assert_not_called()


def test_enable_hook_with_string_param(model):
    model.context_level = 5
    spies = _spy(model, [HP_NAME])
    hook = lambda x: False  # noqa: E731
    model._enable_hook(HP_NAME, hook=hook, dir="fwd")
    spies[HP_NAME].assert_called_with(hook, dir="fwd", level=5)


def test_enable_hook_with_callable_param(model):
    model.context_level = 5
    spies = _spy(model, list(model.hook_dict))
    enabled = lambda x: x == "blocks.0.attn.hook_pattern"  # noqa: E731
    hook = lambda x: False  # noqa: E731
    model._enable_hook(enabled, hook=hook, dir="fwd")
    for name, spy in spies.items():
        if name == "blocks.0.attn.hook_pattern":
            spy.assert_called_with(hook, dir="fwd", level=5)
        else:
            spy.assert_not_called()


# =============================================================================================
# tests/unit/test_hook_introspection.py — list_hooks / LensHandle.user_hook / repr
# =============================================================================================

HOOK_A, HOOK_B = "hook_embed", "blocks.0.hook_resid_post"


def _my_named_hook(activation, hook):
    return activation


def _other_hook(activation, hook):
    return activation


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_lens_handle_stores_user_hook(mock_handle, model):
    mock_handle.return_value.id = 0
    hp = model.hook_dict[HOOK_A]
    hp.add_hook(_my_named_hook, dir="fwd")
    assert hp.fwd_hooks[0].user_hook is _my_named_hook


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_hookpoint_repr_includes_hook_count(mock_handle, model):
    mock_handle.return_value.id = 0
    hp = model.hook_dict["blocks.0.hook_resid_post"]   # named by the model's setup()
    assert "blocks.0.hook_resid_post" in repr(hp)
    hp.add_hook(_my_named_hook, dir="fwd")
    hp.add_hook(_other_hook, dir="fwd")
    rep = repr(hp)
    assert "2 fwd" in rep
    assert "bwd" not in rep


def test_hookpoint_repr_with_no_name_and_no_hooks(model):
    assert repr(type(model.hook_dict[HOOK_A])()) == "HookPoint()"


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_list_hooks_empty_model_returns_empty_dict(mock_handle, model):
    assert model.list_hooks() == {}


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_list_hooks_returns_user_callable(mock_handle, model):
    mock_handle.return_value.id = 0
    model.hook_dict[HOOK_A].add_hook(_my_named_hook, dir="fwd")
    result = model.list_hooks()
    assert set(result.keys()) == {HOOK_A}
    handles = result[HOOK_A]
    assert len(handles) == 1
    assert handles[0].user_hook is _my_named_hook


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_list_hooks_name_filter_string(mock_handle, model):
    mock_handle.return_value.id = 0
    model.hook_dict[HOOK_A].add_hook(_my_named_hook, dir="fwd")
    model.hook_dict[HOOK_B].add_hook(_other_hook, dir="fwd")
    assert set(model.list_hooks(name_filter=HOOK_A).keys()) == {HOOK_A}


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_list_hooks_name_filter_list(mock_handle, model):
    mock_handle.return_value.id = 0
    model.hook_dict[HOOK_A].add_hook(_my_named_hook, dir="fwd")
    model.hook_dict[HOOK_B].add_hook(_other_hook, dir="fwd")
    assert set(model.list_hooks(name_filter=[HOOK_A, HOOK_B]).keys()) == {HOOK_A, HOOK_B}
    assert set(model.list_hooks(name_filter=[HOOK_B]).keys()) == {HOOK_B}


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_list_hooks_name_filter_callable(mock_handle, model):
    mock_handle.return_value.id = 0
    model.hook_dict[HOOK_A].add_hook(_my_named_hook, dir="fwd")
    model.hook_dict[HOOK_B].add_hook(_other_hook, dir="fwd")
    result = model.list_hooks(name_filter=lambda n: n.endswith("embed"))
    assert set(result.keys()) == {HOOK_A}


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_list_hooks_direction_filter(mock_handle, model):
    mock_handle.return_value.id = 0
    model.hook_dict[HOOK_A].add_hook(_my_named_hook, dir="fwd")
    model.hook_dict[HOOK_A].add_hook(_other_hook, dir="bwd")
    assert len(model.list_hooks(dir="fwd")[HOOK_A]) == 1
    assert len(model.list_hooks(dir="bwd")[HOOK_A]) == 1
    assert len(model.list_hooks(dir="both")[HOOK_A]) == 2


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_list_hooks_excludes_permanent_when_requested(mock_handle, model):
    mock_handle.return_value.id = 0
    model.hook_dict[HOOK_A].add_hook(_my_named_hook, dir="fwd", is_permanent=True)
    model.hook_dict[HOOK_A].add_hook(_other_hook, dir="fwd", is_permanent=False)
    assert len(model.list_hooks(including_permanent=True)[HOOK_A]) == 2
    handles = model.list_hooks(including_permanent=False)[HOOK_A]
    assert len(handles) == 1
    assert handles[0].user_hook is _other_hook


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_mixin_works_on_class_with_hook_dict_attribute(mock_handle, model):
    """The duck-typed contract: the mixin reads `hook_dict` (the model is one such class)."""
    mock_handle.return_value.id = 0
    assert isinstance(model, HookIntrospectionMixin)

    class Bag(HookIntrospectionMixin):
        def __init__(self):
            hp = model.hook_dict[HOOK_A]
            hp.add_hook(_my_named_hook, dir="fwd")
            self.hook_dict = {"only_hook": hp}

    result = Bag().list_hooks()
    assert set(result.keys()) == {"only_hook"}
    assert result["only_hook"][0].user_hook is _my_named_hook


@mock.patch("torch.utils.hooks.RemovableHandle", autospec=True)
def test_mixin_works_on_class_with_hook_dict_property(mock_handle, model):
    mock_handle.return_value.id = 0

    class PropertyBag(HookIntrospectionMixin):
        def __init__(self):
            self._hooks = {"only_hook": model.hook_dict[HOOK_A]}
            self._hooks["only_hook"].add_hook(_my_named_hook, dir="fwd")

        @property
        def hook_dict(self):
            return self._hooks

    result = PropertyBag().list_hooks()
    assert result["only_hook"][0].user_hook is _my_named_hook


# =============================================================================================
# tests/integration/test_hooks.py
# =============================================================================================

prompt = PROMPT
embed = lambda name: name == "hook_embed"  # noqa: E731


class Counter:
    def __init__(self):
        self.count = 0

    def inc(self, *args, **kwargs):
        self.count += 1


def test_model_is_a_hooked_root_module(model):
    """(Ours: the premise of every test below.)"""
    assert isinstance(model, HookedRootModule)
    assert all(isinstance(hp, HookPoint) for hp in model.hook_dict.values())


def test_hook_attaches_normally(model):
    c = Counter()
    _ = model.run_with_hooks(prompt, fwd_hooks=[(embed, c.inc)])
    assert all([len(hp.fwd_hooks) == 0 for _, hp in model.hook_dict.items()])
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_perma_hook_attaches_normally(model):
    c = Counter()
    model.add_perma_hook(embed, c.inc)
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    model.run_with_hooks(prompt, fwd_hooks=[])
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_hook_context_manager(model):
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
        model.forward(prompt)
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_nested_hook_context_manager(model):
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
        model.forward(prompt)
        assert c.count == 1
        with model.hooks(fwd_hooks=[(embed, c.inc)]):
            assert len(model.hook_dict["hook_embed"].fwd_hooks) == 2
            model.forward(prompt)
            assert c.count == 3  # 2 from outer, 1 from inner
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 3
    model.remove_all_hook_fns(including_permanent=True)


def test_context_manager_run_with_cache(model):
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
        model.run_with_cache(prompt)
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_backward_hook_runs_successfully(model):
    c = Counter()

    def skip_grad(output_grad: torch.Tensor, hook: Any):
        c.inc()
        return (output_grad,)

    with model.hooks(bwd_hooks=[(embed, skip_grad)]):
        assert len(model.hook_dict["hook_embed"].bwd_hooks) == 1
        out = model(prompt)
        assert c.count == 0
        out.sum().backward()  # this should run the hook
        assert len(model.hook_dict["hook_embed"].bwd_hooks) == 1
    assert len(model.hook_dict["hook_embed"].bwd_hooks) == 0
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_backward_hook_returning_bare_tensor(model):
    """Regression test for TL issue #1160 (a bare tensor from a backward hook)."""
    c = Counter()

    def modify_grad(grad: torch.Tensor, hook: Any):
        c.inc()
        return grad  # bare tensor, NOT (grad,)

    with model.hooks(bwd_hooks=[("blocks.0.hook_resid_post", modify_grad)]):
        out = model(prompt)
        out.sum().backward()
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_backward_hook_returning_none(model):
    c = Counter()

    def observe_grad(grad: torch.Tensor, hook: Any):
        c.inc()
        return None

    with model.hooks(bwd_hooks=[("blocks.0.hook_resid_post", observe_grad)]):
        out = model(prompt)
        out.sum().backward()
    assert c.count == 1
    model.remove_all_hook_fns(including_permanent=True)


def test_hook_context_manager_with_permanent_hook(model):
    c = Counter()
    model.add_perma_hook(embed, c.inc)
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 2
        model.forward(prompt)
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
    assert c.count == 2  # 1 from permanent, 1 from context manager
    model.remove_all_hook_fns(including_permanent=True)


def test_nested_context_manager_with_failure(model):
    def fail_hook(z, hook):
        raise ValueError("fail")

    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        with pytest.raises(ValueError):
            with model.hooks(fwd_hooks=[(embed, fail_hook)]):
                assert len(model.hook_dict["hook_embed"].fwd_hooks) == 2
                model.forward(prompt)
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
        assert c.count == 1
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0
    model.remove_all_hook_fns(including_permanent=True)


def test_reset_hooks_in_context_manager(model):
    c = Counter()
    with model.hooks(fwd_hooks=[(embed, c.inc)]):
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1
        model.reset_hooks()
        assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0
    model.remove_all_hook_fns(including_permanent=True)


def test_remove_hook(model):
    c = Counter()
    model.add_perma_hook(embed, c.inc)
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1  # 1 after adding
    model.remove_all_hook_fns()
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 1  # permanent not removed without flag
    model.remove_all_hook_fns(including_permanent=True)
    assert len(model.hook_dict["hook_embed"].fwd_hooks) == 0  # removed now
    model.run_with_hooks(prompt, fwd_hooks=[])
    assert c.count == 0
    model.remove_all_hook_fns(including_permanent=True)


def test_conditional_hooks(model):
    """Test that it's only possible to add certain hooks when certain conditions are met"""

    def identity_hook(z, hook):
        return z

    for hook_name, set_use_hook_function in [
        ("blocks.0.attn.hook_result", model.set_use_attn_result),
        ("blocks.0.hook_q_input", model.set_use_split_qkv_input),
        ("blocks.0.hook_mlp_in", model.set_use_hook_mlp_in),
        ("blocks.0.hook_attn_in", model.set_use_attn_in),
    ]:
        model.reset_hooks()
        set_use_hook_function(False)
        # Ensure that we get an error when we inappropriately add a hook
        with pytest.raises(AssertionError):
            model.add_hook(hook_name, identity_hook)

        # Ensure we DON'T get an error when we add a hook properly
        set_use_hook_function(True)
        model.add_hook(hook_name, identity_hook)

        # Reset the flag
        set_use_hook_function(False)

    # (1, 4, ... because the batch size is 1 and the sequence length is 4)
    correct_shapes = {
        3: (1, 4, model.cfg.d_model),
        4: (1, 4, model.cfg.n_heads, model.cfg.d_model),
    }

    for hook_name, set_use_hook_function, number_of_dimensions in [
        ("blocks.0.hook_q_input", model.set_use_split_qkv_input, 4),
        ("blocks.0.hook_attn_in", model.set_use_attn_in, 4),
        ("blocks.0.hook_mlp_in", model.set_use_hook_mlp_in, 3),
    ]:
        model.reset_hooks()
        set_use_hook_function(True)

        cache = model.run_with_cache(
            prompt,
            names_filter=lambda x: x == hook_name,  # noqa: B023
        )[1]

        assert list(cache.keys()) == [hook_name]
        assert cache[hook_name].shape == correct_shapes[number_of_dimensions]

        set_use_hook_function(False)


@pytest.mark.parametrize(
    "zero_attach_pos,prepend",
    [(zero_attach_pos, prepend) for zero_attach_pos in range(2) for prepend in [True, False]],
)
def test_prepending_hooks(zero_attach_pos, prepend, model):
    """Two hooks on the last layer's output: one sets it to 0, one to random noise. If it ends
    up 0, the logits are exactly the unembedding bias (ln_final of 0 is its bias, 0 here, as in
    the folded-LN solu-1l). Tests that prepend orders the hooks."""

    def set_to_zero(z, hook):
        z[:] = 0.0
        return z

    def set_to_randn(z, hook):
        z = torch.randn_like(z) * 0.1
        return z

    model.reset_hooks()

    for hook_idx in range(2):
        model.add_hook(
            "blocks.0.hook_resid_post",
            set_to_zero if hook_idx == zero_attach_pos else set_to_randn,
            prepend=prepend,
        )
    logits = model(torch.arange(5)[None, :])

    logits_are_unembed_bias = (zero_attach_pos == 1) != prepend
    # TL reads model.unembed.b_U; `model.b_U` is the same tensor on a HookedTransformer.
    assert torch.allclose(logits, model.b_U[None, :]) == logits_are_unembed_bias


# =============================================================================================
# tests/integration/test_cache_hook_names.py
# =============================================================================================

# TL's list for solu-1l, less the three SoLU-only hooks (mlp.hook_mid, mlp.ln.hook_scale,
# mlp.ln.hook_normalized): our GPT (and a HookedTransformer with act_fn="gelu") has no SoLU LN.
act_names_in_cache = [
    "hook_embed",
    "hook_pos_embed",
    "blocks.0.hook_resid_pre",
    "blocks.0.ln1.hook_scale",
    "blocks.0.ln1.hook_normalized",
    "blocks.0.attn.hook_q",
    "blocks.0.attn.hook_k",
    "blocks.0.attn.hook_v",
    "blocks.0.attn.hook_attn_scores",
    "blocks.0.attn.hook_pattern",
    "blocks.0.attn.hook_z",
    "blocks.0.hook_attn_out",
    "blocks.0.hook_resid_mid",
    "blocks.0.ln2.hook_scale",
    "blocks.0.ln2.hook_normalized",
    "blocks.0.mlp.hook_pre",
    "blocks.0.mlp.hook_post",
    "blocks.0.hook_mlp_out",
    "blocks.0.hook_resid_post",
    "ln_final.hook_scale",
    "ln_final.hook_normalized",
    "unembed.hook_in",
    "unembed.hook_out",
]


def test_cache_hook_names(model):
    _, cache = model.run_with_cache(prompt)
    assert list(cache.keys()) == act_names_in_cache


# =============================================================================================
# tests/integration/test_cache_pos_slice.py ("tiny-stories-1M": here 2 layers, LN, MLP)
# =============================================================================================

POS_SLICE_PROMPT = torch.arange(1, 16)[None, :] * 3 % 50   # 15 tokens


@pytest.fixture
def model_2l(request):
    return make_model(request.param, n_layers=2)


def _pos_slice_names():
    return ["resid_pre", "resid_post", "resid_mid", ("scale", "ln1"), ("scale", "ln2"),
            ("normalized", "ln1"), ("normalized", "ln2"), "q", "k", "v", "z",
            "attn_out", "pre", "post", "mlp_out"]


def _key(name, layer):
    return (name[0], layer, name[1]) if isinstance(name, tuple) else (name, layer)


@pytest.mark.parametrize("model_2l", KINDS, indirect=True)
def test_run_with_cache_pos_slice_keep_batch(model_2l):
    model = model_2l
    _, cache_no_slice = model.run_with_cache(POS_SLICE_PROMPT, return_type=None)
    num_tokens = POS_SLICE_PROMPT.shape[1]

    d_model, d_head = model.cfg.d_model, model.cfg.d_head
    n_heads, n_layers = model.cfg.n_heads, model.cfg.n_layers

    test_positions = [0, num_tokens // 2, num_tokens - 1, -1]

    for i in test_positions:
        _, cache_with_slice = model.run_with_cache(
            POS_SLICE_PROMPT, return_type=None, pos_slice=i)

        assert cache_with_slice["embed"].shape == torch.Size([1, 1, d_model])
        assert cache_with_slice["q", 0].shape == torch.Size([1, 1, n_heads, d_head])

        assert torch.equal(cache_no_slice["embed"][0, i, :], cache_with_slice["embed"][0, 0, :])
        assert torch.equal(
            cache_no_slice["pos_embed"][0, i, :], cache_with_slice["pos_embed"][0, 0, :]
        )

        for layer in range(n_layers):
            for name in _pos_slice_names():
                key = _key(name, layer)
                assert torch.equal(cache_no_slice[key][0, i], cache_with_slice[key][0, 0]), key
            for name in ["attn_scores", "pattern"]:
                assert torch.equal(
                    cache_no_slice[name, layer][0, :, i, :],
                    cache_with_slice[name, layer][0, :, 0, :],
                ), name


@pytest.mark.parametrize("model_2l", KINDS, indirect=True)
def test_run_with_cache_pos_slice_remove_batch(model_2l):
    model = model_2l
    _, cache_no_slice = model.run_with_cache(
        POS_SLICE_PROMPT, remove_batch_dim=True, return_type=None)
    num_tokens = POS_SLICE_PROMPT.shape[1]

    d_model, d_head = model.cfg.d_model, model.cfg.d_head
    n_heads, n_layers = model.cfg.n_heads, model.cfg.n_layers

    test_positions = [0, num_tokens // 2, num_tokens - 1, -1]

    for i in test_positions:
        _, cache_with_slice = model.run_with_cache(
            POS_SLICE_PROMPT, remove_batch_dim=True, pos_slice=i)

        assert cache_with_slice["embed"].shape == torch.Size([1, d_model])
        assert cache_with_slice["q", 0].shape == torch.Size([1, n_heads, d_head])

        assert torch.equal(cache_no_slice["embed"][i, :], cache_with_slice["embed"][0, :])
        assert torch.equal(cache_no_slice["pos_embed"][i, :], cache_with_slice["pos_embed"][0, :])

        for layer in range(n_layers):
            for name in _pos_slice_names():
                key = _key(name, layer)
                assert torch.equal(cache_no_slice[key][i], cache_with_slice[key][0]), key
            for name in ["attn_scores", "pattern"]:
                assert torch.equal(
                    cache_no_slice[name, layer][:, i, :],
                    cache_with_slice[name, layer][:, 0, :],
                ), name


# =============================================================================================
# tests/integration/test_hook_shape_compatibility.py — its shape table, on our cache
# =============================================================================================

def _to_list(keys: Iterable[str]) -> list[str]:
    return list(keys) if not isinstance(keys, list) else keys


def _expected_shape_for_name(
    name: str, *, batch: int, pos: int, d_model: int, d_vocab: int | None,
    n_heads: int | None, d_head: int | None, d_mlp: int | None,
) -> tuple[int, ...] | None:
    """TL's table, verbatim in its logic (TransformerBridge names; the HookedTransformer names
    it also covers: hook_scale, hook_normalized, attn_scores, pattern, mlp.hook_pre,
    unembed.hook_in/out)."""
    if name.endswith("unembed.hook_in"):
        return (batch, pos, d_model)
    if name.endswith("unembed.hook_out") and d_vocab is not None:
        return (batch, pos, d_vocab)
    if name.endswith("embed.hook_in") or name.endswith("pos_embed.hook_in"):
        return (batch, pos)
    if name.endswith("embed.hook_out") or name.endswith("pos_embed.hook_out"):
        return (batch, pos, d_model)
    if ".hook_in" in name and ".attn." not in name and ".mlp." not in name and ".ln" not in name:
        return (batch, pos, d_model)
    if ".hook_out" in name and ".attn." not in name and ".mlp." not in name and ".ln" not in name:
        return (batch, pos, d_model)
    if name.endswith("attn.hook_in") or name.endswith("attn.hook_out"):
        return (batch, pos, d_model)
    if name.endswith("attn.hook_hidden_states"):
        return (batch, pos, d_model)
    if name.endswith("attn.hook_attention_weights") and n_heads is not None:
        return (batch, n_heads, pos, pos)
    if name.endswith("attn.hook_attn_scores") and n_heads is not None:
        return (batch, n_heads, pos, pos)
    if name.endswith("attn.hook_pattern") and n_heads is not None:
        return (batch, n_heads, pos, pos)
    if name.endswith("attn.o.hook_out"):
        return (batch, pos, d_model)
    if ".ln" in name and name.endswith("hook_in"):
        return (batch, pos, d_model)
    if ".ln" in name and name.endswith("hook_out"):
        return (batch, pos, d_model)
    if name.endswith("hook_normalized"):
        return (batch, pos, d_model)
    if name.endswith("hook_scale"):
        return (batch, pos, 1)
    if name.endswith("mlp.hook_in") or name.endswith("mlp.hook_out"):
        return (batch, pos, d_model)
    if name.endswith("mlp.hook_pre") and d_mlp is not None:
        return (batch, pos, d_mlp)
    if name.endswith("mlp.input.hook_in") or name.endswith("mlp.out.hook_out"):
        return (batch, pos, d_model)
    if (
        name.endswith("mlp.input.hook_out") or name.endswith("mlp.out.hook_in")
    ) and d_mlp is not None:
        return (batch, pos, d_mlp)
    return None


def test_hook_shapes(model):
    """TL's test_transformer_bridge_hook_shapes body on our model's cache, with the tokens of
    "Hello world" (2 tokens + BOS). Default hook set: with set_use_split_qkv_input the ln1
    hooks are per head ([batch pos head ...]) on HookedTransformer too, outside this table."""
    tokens = torch.tensor([[1, 7, 9]])
    batch, pos = int(tokens.shape[0]), int(tokens.shape[1])
    cfg = model.cfg
    d_model, d_vocab = int(cfg.d_model), int(cfg.d_vocab)
    n_heads, d_head, d_mlp = int(cfg.n_heads), int(cfg.d_head), int(cfg.d_mlp)

    _, cache = model.run_with_cache(tokens, device="cpu")
    keys = sorted(_to_list(cache.keys()))

    mismatches: list = []
    checked = 0
    for name in keys:
        exp = _expected_shape_for_name(name, batch=batch, pos=pos, d_model=d_model,
                                       d_vocab=d_vocab, n_heads=n_heads, d_head=d_head,
                                       d_mlp=d_mlp)
        if exp is None:
            continue
        got = tuple(cache[name].shape)
        if got != exp:
            mismatches.append((name, exp, got))
        checked += 1

    assert checked > 0, "No hooks were checked; update expected mapping or model filter"
    msg = "\n".join(f"{n}: expected {e}, got {g}" for n, e, g in mismatches[:20])
    assert not mismatches, f"Found {len(mismatches)} shape mismatches. Examples:\n{msg}"
    assert isinstance(cache, ActivationCache)


# =============================================================================================
# Ours, on TransformerLens 3.x: the same hooks on a real HookedTransformer with the same weights
# =============================================================================================

if HAS_HT:

    def _optional_hooks(model, on: bool) -> None:
        for flag in ("set_use_attn_result", "set_use_split_qkv_input", "set_use_hook_mlp_in"):
            getattr(model, flag)(on)

    @pytest.mark.parametrize("n_layers", [1, 2])
    def test_same_hooks_as_converted_hooked_transformer(n_layers):
        """`to_hooked_transformer(gpt)`: the same hook names in the same firing order, and the
        same activations at each (every optional hook on), as TL's own model."""
        gpt = make_model("gpt", n_layers=n_layers)
        randomize(gpt, seed=2, ln=True)
        ht = sgpt.to_hooked_transformer(gpt)
        assert isinstance(ht, HookedTransformer)
        _optional_hooks(gpt, True)
        _optional_hooks(ht, True)
        tokens = POS_SLICE_PROMPT.repeat(2, 1)
        logits_gpt, cache_gpt = gpt.run_with_cache(tokens)
        logits_ht, cache_ht = ht.run_with_cache(tokens)
        assert list(cache_gpt.keys()) == list(cache_ht.keys())
        for name in cache_ht.keys():
            torch.testing.assert_close(cache_gpt[name], cache_ht[name], atol=1e-5, rtol=1e-4,
                                       msg=lambda m, name=name: f"{name}: {m}")
        torch.testing.assert_close(logits_gpt, logits_ht, atol=1e-5, rtol=1e-4)

    def test_same_hooks_as_hooked_transformer_it_was_converted_from():
        """`GPT.from_hooked_transformer(ht)`: the same activations at every hook point."""
        ht = make_model("ht", n_layers=2)
        randomize(ht, seed=3, ln=True)
        gpt = GPT.from_hooked_transformer(ht)
        _, cache_gpt = gpt.run_with_cache(POS_SLICE_PROMPT)
        _, cache_ht = ht.run_with_cache(POS_SLICE_PROMPT)
        assert list(cache_gpt.keys()) == list(cache_ht.keys())
        for name in cache_ht.keys():
            torch.testing.assert_close(cache_gpt[name], cache_ht[name], atol=1e-5, rtol=1e-4,
                                       msg=lambda m, name=name: f"{name}: {m}")
