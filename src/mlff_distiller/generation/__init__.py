"""Structure generation: sources (molecules, crystals, slabs, clusters, liquids, files), samplers
(rattle, normal modes, MD, rattle-relax trees, high-energy) and recipes -> an unlabelled pool.

``load_recipe(name_or_path) -> dict`` and ``generate(recipe, out_path, tier=None) -> summary``
are the entry points; see docs/generation.md and docs/recipes.md. Units: Angstrom, K, fs.

The names below are imported on first use, so that ``mlff-distill --help`` (which imports the
``generation.cli`` module) does not pay for RDKit, ASE and friends.
"""

from __future__ import annotations

from .._lazy import lazy_exports

_EXPORTS = {
    "generate": "engine",
    "iter_structures": "engine",
    "GenerationConfig": "recipe",
    "builtin_recipes": "recipe",
    "load_recipe": "recipe",
    "validate_recipe": "recipe",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())
