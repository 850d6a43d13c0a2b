"""Old spellings kept for one release: each warns `DeprecationWarning` naming the new one.

Used where issue 12's conventions renamed a public name or made an option keyword-only; the
repo's own code never takes these paths (the test suite runs with `-W error::DeprecationWarning`
over the changed modules).
"""

from __future__ import annotations

import warnings
from typing import Any


class _Unset:
    """Marks an argument the caller left out (where None is itself a meaningful value)."""

    def __repr__(self) -> str:
        return "<unset>"

    def __bool__(self) -> bool:
        return False


UNSET: Any = _Unset()


def is_set(value: Any) -> bool:
    return not isinstance(value, _Unset)


def warn(message: str, *, stacklevel: int = 3) -> None:
    """A `DeprecationWarning` pointing at the caller of the public function (stacklevel 3)."""
    warnings.warn(message + " (the old spelling will be removed in the next release)",
                  DeprecationWarning, stacklevel=stacklevel)


def renamed_argument(func: str, old: str, new: str, old_value: Any, new_value: Any,
                     *, default: Any = None) -> Any:
    """The value of a parameter renamed `old` -> `new`: `new_value`, or `old_value` (with a
    warning) when only the old keyword was passed. Passing both is an error."""
    if not is_set(old_value):
        return new_value
    if is_set(new_value) and new_value is not default:
        raise TypeError(f"{func}() got both {new}= and its old name {old}=; pass only {new}=")
    warn(f"{func}({old}=...) is now {func}({new}=...)", stacklevel=4)
    return old_value


def positional_option(func: str, name: str, args: tuple, value: Any,
                      *, default: Any = None) -> Any:
    """An option that became keyword-only: `args` holds what was passed positionally in its
    old place (at most one value). Returns the value to use; warns when it came positionally."""
    if not args:
        return value
    if len(args) > 1:
        raise TypeError(f"{func}() takes {name} as its only extra argument, got {len(args)} "
                        f"extra positional arguments; pass {name}=... by keyword")
    if value is not default:
        raise TypeError(f"{func}() got {name} both positionally and as {name}=; pass only "
                        f"{name}=...")
    warn(f"passing {name} positionally to {func}() is deprecated; pass {name}=... by keyword",
         stacklevel=4)
    return args[0]


def positional_options(func: str, lead: str, args: tuple, given: dict[str, Any],
                       defaults: dict[str, Any]) -> list[Any]:
    """Options that became keyword-only, in their old positional order: `given` maps each
    name to the value passed by keyword (in that order), `defaults` to its default, `lead`
    spells the positional arguments that remain ("n, d"). Returns the values to use, in the
    order of `given`; warns when some came positionally."""
    names = list(given)
    kws = ", ".join(f"{n}=..." for n in names)
    if len(args) > len(names):
        raise TypeError(f"{func}() takes {lead} and then keywords, got {len(args)} more "
                        f"positional arguments; pass {kws}")
    if not args:
        return list(given.values())
    if any(given[n] != defaults[n] for n in names[:len(args)]):
        raise TypeError(f"{func}() got {'/'.join(names)} both positionally and by keyword; "
                        f"pass them only as {kws}")
    warn(f"passing {' and '.join(names[:len(args)])} positionally to {func}() is deprecated; "
         f"pass {kws} ({func}({lead}, {kws}))", stacklevel=4)
    return [*args, *[given[n] for n in names[len(args):]]]
