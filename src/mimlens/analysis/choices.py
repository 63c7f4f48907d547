"""The named choices the analyses share, and their check; torch-free, so argument parsers can import it.

- ``PREFIX_POLICIES``: how prefix tokens (CLS, distillation, registers) count. Attention: ``renorm`` drops them
  as keys and renormalises each row over patch keys, ``drop`` drops them without renormalising, ``keep`` keeps
  them as keys at distance 0. Block features: ``renorm`` and ``drop`` leave them out, ``keep`` includes them.
- ``UNITS``: what one CKA sample is (``image``, ``pooled`` or ``token``); ``POOLED``: the pooled token.
"""

from __future__ import annotations

from mimlens.errors import MimlensError

__all__ = ["POOLED", "PREFIX_POLICIES", "UNITS", "check_choice"]

PREFIX_POLICIES = ("renorm", "drop", "keep")
UNITS = ("image", "pooled", "token")
POOLED = ("mean", "cls")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise a :class:`MimlensError` naming ``name`` and the choices unless ``value`` is one of them."""
    if value not in choices:
        raise MimlensError(f"{name}={value!r}: expected one of {', '.join(choices)}")
