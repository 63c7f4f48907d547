"""The named choices the analyses share, and their check; torch-free, so argument parsers can import it.

- ``PREFIX_POLICIES``: how prefix tokens (CLS, distillation, registers) count. Attention: ``renorm`` drops them
  as keys and renormalises each row over patch keys, ``drop`` drops them without renormalising, ``keep`` keeps
  them as keys at distance 0. Block features: ``renorm`` and ``drop`` leave them out, ``keep`` includes them.
- ``UNITS``: what one CKA sample is (``image``, ``pooled`` or ``token``); ``POOLED``: the pooled token.
- ``SIMILARITY_MEASURES``: the measures of the ``similarity`` analysis; ``FULL_DATA_MEASURES`` are those that
  keep every image's pooled features (the others need only streamed sums). ``SIMILARITY_DEFAULTS``: its
  settings (the ``analysis.similarity`` section of a config), checked by :func:`check_similarity`.
"""

from __future__ import annotations

from mimlens.errors import MimlensError

__all__ = ["FULL_DATA_MEASURES", "POOLED", "PREFIX_POLICIES", "SIMILARITY_DEFAULTS", "SIMILARITY_MEASURES", "UNITS",
           "check_choice", "check_similarity"]

PREFIX_POLICIES = ("renorm", "drop", "keep")
UNITS = ("image", "pooled", "token")
POOLED = ("mean", "cls")
SIMILARITY_MEASURES = ("mutual_knn", "cknna", "svcca", "pwcca", "procrustes", "rsa")
FULL_DATA_MEASURES = ("mutual_knn", "cknna", "rsa")
# ``max_images``: the most images the full-data measures accept (they keep n·d·4 bytes per block and n x n matrices);
# ``replicates`` (half-samples of the interval) and ``permutations`` (of the null) calibrate them, 0 turns each off
SIMILARITY_DEFAULTS = {"measures": list(SIMILARITY_MEASURES), "pooled": "mean", "k": 10, "max_images": 2048,
                       "replicates": 100, "permutations": 100}


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    """Raise a :class:`MimlensError` naming ``name`` and the choices unless ``value`` is one of them."""
    if value not in choices:
        raise MimlensError(f"{name}={value!r}: expected one of {', '.join(choices)}")


def check_similarity(settings: object, key: str = "similarity", images: int | None = None) -> None:
    """The ``similarity`` settings: exactly the keys of :data:`SIMILARITY_DEFAULTS`, ``measures`` a non-empty list of
    known measures, ``pooled`` one of :data:`POOLED`, ``k`` and ``max_images`` positive integers, ``replicates``
    and ``permutations`` non-negative integers, and ``images``
    (when given) at most ``max_images`` if a full-data measure is asked for; else one line naming the key."""
    if not isinstance(settings, dict) or set(settings) != set(SIMILARITY_DEFAULTS):
        raise MimlensError(f"{key}={settings!r}: expected a mapping with the keys {', '.join(SIMILARITY_DEFAULTS)}")
    measures = settings["measures"]
    if not isinstance(measures, list | tuple) or not measures:
        raise MimlensError(f"{key}.measures={measures!r}: expected a non-empty list from "
                           f"{', '.join(SIMILARITY_MEASURES)}")
    for name in measures:
        check_choice(f"{key}.measures", name, SIMILARITY_MEASURES)
    check_choice(f"{key}.pooled", settings["pooled"], POOLED)
    for name in ("k", "max_images"):
        value = settings[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise MimlensError(f"{key}.{name}={value!r}: expected a positive integer")
    for name in ("replicates", "permutations"):
        value = settings[name]
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise MimlensError(f"{key}.{name}={value!r}: expected an integer >= 0 (0 turns it off)")
    full = [name for name in measures if name in FULL_DATA_MEASURES]
    if full and images is not None and images > settings["max_images"]:
        raise MimlensError(f"{images} images exceed {key}.max_images={settings['max_images']}: {', '.join(full)} "
                           "keep every image's pooled features (n·d·4 bytes per block) and n x n matrices; raise the "
                           "cap or leave them out of the measures")
