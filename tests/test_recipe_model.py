"""The typed recipe (``mlff_distiller.recipe.Recipe``): built once, each section its stage's own
config, one-line errors (never a pydantic traceback), and the resolved recipe in the pool file."""

from __future__ import annotations

import copy
import subprocess
import sys

import pytest
import yaml
from pydantic import ValidationError

from mlff_distiller.active.config import ActiveConfig
from mlff_distiller.bench.runner import BenchConfig
from mlff_distiller.data.store import DatasetReader
from mlff_distiller.errors import ConfigError
from mlff_distiller.generation import generate, load_recipe
from mlff_distiller.generation.recipe import GenerationConfig
from mlff_distiller.labeling.config import LabelingConfig
from mlff_distiller.quality.config import QualityConfig
from mlff_distiller.recipe import TOP_LEVEL_KEYS, BenchSection, Recipe
from mlff_distiller.training.config import TrainConfig

SECTIONS = ("generation", "labeling", "quality", "training", "active", "bench")


def mini_recipe() -> dict:
    """Four rattled Cu cells: a pool in well under a second, no teacher needed."""
    return {
        "name": "mini",
        "seed": 5,
        "teacher": "emt",
        "generation": {
            "size": {"min": 4, "max": 32},
            "count": 4,
            "sources": {"cu": {"kind": "bulk", "crystals": ["Cu-fcc"]}},
            "mix": [{"source": "cu", "sampler": "rattle", "count": 4}],
        },
        "training": {"max_epochs": 2},
        "bench": {"test_fraction": 0.2, "systems": ["cu-64"], "n_rounds": 1},
    }


def _config_error(recipe) -> str:
    with pytest.raises(ConfigError) as err:
        Recipe.build(recipe)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


@pytest.mark.parametrize("name", ["tiny", "tiny-active", "seed-m2", "water"])
def test_builtin_recipe_round_trips_through_its_resolved_form(name):
    recipe = Recipe.load(name)
    resolved = recipe.resolved()
    assert set(resolved) == set(TOP_LEVEL_KEYS)
    again = Recipe.build(resolved)
    for key in ("name", "seed", "teacher") + SECTIONS:
        assert getattr(again, key) == getattr(recipe, key), key
    assert again.resolved() == resolved
    # the resolved form fills defaults in: every training field, the quality checks, the sampler params
    assert set(resolved["training"]) == set(TrainConfig.__dataclass_fields__)
    assert resolved["labeling"]["workers"] == recipe.labeling.workers
    assert all(entry["params"] and "size" in entry for entry in resolved["generation"]["mix"])
    assert all("size" in spec for spec in resolved["generation"]["sources"].values())
    # the recipe as given is kept apart from it (the stage fingerprints hash it)
    assert recipe.to_dict() == load_recipe(name)


def test_each_section_is_its_stages_typed_config():
    recipe = Recipe.load("tiny-active")
    assert isinstance(recipe.generation, GenerationConfig) and recipe.generation.seed == recipe.seed
    assert isinstance(recipe.labeling, LabelingConfig)
    assert isinstance(recipe.quality, QualityConfig)
    assert isinstance(recipe.training, TrainConfig)
    assert isinstance(recipe.active, ActiveConfig)
    assert isinstance(recipe.bench, BenchSection) and isinstance(recipe.bench.config, BenchConfig)
    given = load_recipe("tiny-active")
    assert recipe.training == TrainConfig.from_dict(given.get("training"))
    assert recipe.section("bench") == given.get("bench")
    # absent sections are their defaults (active: none)
    plain = Recipe.build(mini_recipe())
    assert plain.active is None and plain.quality == QualityConfig() and plain.labeling == LabelingConfig()
    assert plain.bench.test_fraction == 0.2 and plain.bench.systems == ["cu-64"]
    assert plain.bench.config == BenchConfig.from_dict({"n_rounds": 1})


def test_the_model_is_frozen_and_with_seed_changes_one_field():
    recipe = Recipe.build(mini_recipe())
    with pytest.raises(ValidationError):  # frozen
        recipe.seed = 9  # type: ignore[misc]
    other = recipe.with_seed(9)
    assert other.seed == other.generation.seed == other.to_dict()["seed"] == 9
    assert recipe.seed == 5 and other.training == recipe.training
    with pytest.raises(ConfigError, match="seed: give a non-negative integer"):
        recipe.with_seed(-1)


def test_unknown_top_level_key_is_one_line_with_the_closest_name():
    recipe = mini_recipe()
    recipe["trainig"] = recipe.pop("training")
    msg = _config_error(recipe)
    assert msg.startswith("recipe: unknown key 'trainig'") and "did you mean 'training'" in msg
    assert "allowed: " + ", ".join(TOP_LEVEL_KEYS) in msg


@pytest.mark.parametrize("section, key, closest, where", [
    ("generation", "tier", "tiers", "generation: unknown key 'tier'"),
    ("training", "max_epoch", "max_epochs", "'max_epoch'"),
    ("labeling", "wokers", "workers", "labeling: unknown key 'wokers'"),
    ("bench", "n_round", "n_rounds", "bench: unknown key 'n_round'"),
])
def test_unknown_nested_key_is_one_line_with_the_closest_name(section, key, closest, where):
    recipe = mini_recipe()
    recipe.setdefault(section, {})[key] = 1
    msg = _config_error(recipe)
    assert where in msg and f"did you mean '{closest}'" in msg


def test_other_errors_name_the_field():
    assert _config_error({"name": "x"}).startswith("generation: missing")
    assert _config_error([1, 2]).startswith("recipe must be a mapping")
    recipe = mini_recipe()
    recipe["labeling"] = 3
    assert _config_error(recipe) == "labeling: expected a mapping"
    recipe = mini_recipe()
    recipe["bench"]["test_fraction"] = 0.7
    assert "bench.test_fraction" in _config_error(recipe)
    recipe = mini_recipe()
    recipe["bench"]["test_fraction"] = "a lot"  # was a ValueError traceback
    assert "bench.test_fraction" in _config_error(recipe)
    recipe = mini_recipe()
    recipe["active"] = {"max_rounds": 0}
    assert "active.max_rounds" in _config_error(recipe)


@pytest.mark.parametrize("command", ["generate", "run"])
def test_cli_prints_one_line_and_exits_2(tmp_path, command):
    recipe = mini_recipe()
    recipe["generation"]["mix"][0]["sampler"] = "shake"
    recipe["trainig"] = recipe.pop("training")
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / ("pool.h5" if command == "generate" else "proj")
    res = subprocess.run([sys.executable, "-m", "mlff_distiller.cli", command, str(path), "-o", str(out)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in res.stderr and "pydantic" not in res.stderr
    assert "trainig" in lines[0] and "did you mean 'training'" in lines[0]
    assert not out.exists()


def test_pool_file_holds_the_recipe_as_given_and_resolved(tmp_path):
    recipe = Recipe.build(mini_recipe())
    generate(recipe, tmp_path / "pool.h5", progress=False, seed=11)
    with DatasetReader(tmp_path / "pool.h5") as r:
        attrs = dict(r.attrs)
        assert len(r) == 4
    given = copy.deepcopy(mini_recipe())
    given["seed"] = 11
    assert attrs["recipe"] == given
    resolved = attrs["recipe_resolved"]
    assert resolved == recipe.with_seed(11).resolved()
    assert resolved["seed"] == 11 and resolved["training"]["max_epochs"] == 2
    assert resolved["generation"]["mix"][0]["params"]["per_root"] >= 1  # a sampler default, filled in
    assert Recipe.build(resolved).generation == recipe.with_seed(11).generation
