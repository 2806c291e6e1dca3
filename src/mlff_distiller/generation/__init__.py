"""Structure generation: sources (molecules, crystals, slabs, clusters, liquids, files), samplers
(rattle, normal modes, MD, rattle-relax trees, high-energy) and recipes -> an unlabelled pool.

``load_recipe(name_or_path) -> dict`` and ``generate(recipe, out_path, tier=None) -> summary``
are the entry points; see docs/generation.md and docs/recipes.md. Units: Angstrom, K, fs.
"""

from .generate import generate, iter_structures
from .recipe import GenerationConfig, builtin_recipes, load_recipe, validate_recipe

__all__ = ["GenerationConfig", "builtin_recipes", "generate", "iter_structures", "load_recipe", "validate_recipe"]
