"""The recipe as one typed object: :class:`Recipe`, built once and passed to every stage.

``Recipe.load(name_or_path)`` reads a built-in recipe (``tiny``, ``quickstart``, ``seed-m2``...)
or a YAML file and validates every section at once. ``Recipe`` is a pydantic model
(``extra="forbid"``) whose sections are the stages' own typed configs, each built by that
stage's ``from_dict`` (the one owner of its fields, defaults and checks):

===============  ===========================================================
``generation``   :class:`~mlff_distiller.generation.recipe.GenerationConfig`
``labeling``     :class:`~mlff_distiller.labeling.config.LabelingConfig`
``quality``      :class:`~mlff_distiller.quality.config.QualityConfig`
``training``     :class:`~mlff_distiller.training.config.TrainConfig`
``active``       :class:`~mlff_distiller.active.config.ActiveConfig` (``None`` without the section)
``bench``        :class:`BenchSection` (a :class:`~mlff_distiller.bench.runner.BenchConfig` plus
                 the pipeline's ``test_fraction`` and ``systems``)
===============  ===========================================================

``name``, ``seed`` (a non-negative integer, default 0) and ``teacher`` (a name or a mapping,
checked when the teacher is built) complete the top level. Every error is one line, a
:class:`~mlff_distiller.errors.ConfigError` naming the field, never a pydantic traceback.

The model keeps the recipe as given (:meth:`Recipe.to_dict`, :meth:`Recipe.section`): the
pipeline's stage fingerprints are computed from it. :meth:`Recipe.resolved` is the recipe with
every default filled in; ``generate`` stores it in the pool file (attribute
``recipe_resolved``) next to the recipe as given (``recipe``). See ``docs/recipes.md``.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, Callable

from pydantic import (
    BaseModel,
    ConfigDict,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    ValidationInfo,
    model_validator,
)

from .active.config import ActiveConfig
from .bench.runner import BenchConfig
from .errors import ConfigError
from .fileio import load_yaml, yaml_error_text
from .generation.recipe import GenerationConfig, builtin_recipes, resolve_source_paths
from .labeling.config import LabelingConfig
from .quality.config import QualityConfig
from .settings import unknown_keys_error
from .training.config import TrainConfig

#: the sections that must be a mapping (``teacher`` may also be a name)
_MAPPINGS = ("teacher", "labeling", "quality", "training", "bench", "active")


@dataclass
class BenchSection:
    """The recipe's ``bench`` section: the bench settings (:class:`BenchConfig`) and the two keys
    the pipeline reads itself: ``test_fraction`` (share of the labelled data held out as the
    test set, in (0, 0.5)) and ``systems`` (bench systems; ``None`` = the bench's defaults)."""

    config: BenchConfig = field(default_factory=BenchConfig)
    test_fraction: float = 0.1
    systems: list | None = None

    #: the keys of the section that are not :class:`BenchConfig` fields
    PIPELINE_KEYS = ("test_fraction", "systems")

    @classmethod
    def from_dict(cls, d: dict | None) -> "BenchSection":
        if d is not None and not isinstance(d, dict):
            raise ConfigError(f"bench: expected a mapping of bench settings, got {type(d).__name__}")
        rest = dict(d or {})
        test_fraction = rest.pop("test_fraction", 0.1)
        systems = rest.pop("systems", None)
        config = BenchConfig.from_dict(rest)
        if isinstance(test_fraction, bool) or not isinstance(test_fraction, (int, float)) or \
                not 0.0 < test_fraction < 0.5:
            raise ConfigError(f"bench.test_fraction = {test_fraction}: must be between 0 and 0.5")
        return cls(config, float(test_fraction), systems)

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self.config), "test_fraction": self.test_fraction, "systems": self.systems}


def _checked(build: Callable[[Any, ValidationInfo], Any], typed: type | None = None) -> Any:
    """The one validator of a field: ``build(value, info)`` (``info.data``: the fields validated
    so far); a value that is already the ``typed`` object is kept as it is."""

    def validate(value, info: ValidationInfo):
        return value if typed is not None and isinstance(value, typed) else build(value, info)

    return PlainValidator(validate)


def _name(value, _info=None) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ConfigError("name: give the recipe name as a string")
    return value


def _seed(value, _info=None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ConfigError(f"seed: give a non-negative integer, got {value!r}")
    return value


def _generation(value, info: ValidationInfo) -> GenerationConfig:
    if not isinstance(value, dict):
        raise ConfigError("generation: missing; a recipe needs a generation section with sources and mix")
    sources = (info.context or {}).get("sources", True)
    return GenerationConfig.from_dict(value, seed=info.data.get("seed", 0), sources=sources)


def _active(value, _info=None) -> ActiveConfig | None:
    return None if value is None else ActiveConfig.from_dict(value)


class Recipe(BaseModel):
    """A validated recipe; build it with :meth:`load` or :meth:`build` (see the module doc)."""

    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True, arbitrary_types_allowed=True)

    name: Annotated[str | None, _checked(_name)] = None
    seed: Annotated[int, _checked(_seed)] = 0
    teacher: str | dict | None = None  # checked when the teacher is built (teachers.build_teacher)
    generation: Annotated[GenerationConfig, _checked(_generation, GenerationConfig)]
    labeling: Annotated[LabelingConfig, _checked(lambda v, _: LabelingConfig.from_dict(v),
                                                 LabelingConfig)] = None  # type: ignore[assignment]
    quality: Annotated[QualityConfig, _checked(lambda v, _: QualityConfig.from_dict(v),
                                               QualityConfig)] = None  # type: ignore[assignment]
    training: Annotated[TrainConfig, _checked(lambda v, _: TrainConfig.from_dict(v),
                                              TrainConfig)] = None  # type: ignore[assignment]
    active: Annotated[ActiveConfig | None, _checked(_active, ActiveConfig)] = None
    bench: Annotated[BenchSection, _checked(lambda v, _: BenchSection.from_dict(v),
                                            BenchSection)] = None  # type: ignore[assignment]

    _given: dict = PrivateAttr(default_factory=dict)  # the recipe as given (fingerprints, recipe.yaml)

    @model_validator(mode="before")
    @classmethod
    def _top_level(cls, d: Any) -> Any:
        """Before any section is built: a mapping, known keys (the closest one suggested for a
        typo), sections that are mappings."""
        if not isinstance(d, dict):
            raise ConfigError(f"recipe must be a mapping with keys {', '.join(cls.model_fields)}")
        unknown = sorted(set(d) - set(cls.model_fields), key=str)
        if unknown:
            raise unknown_keys_error("recipe", unknown, cls.model_fields)
        for key in _MAPPINGS:
            if d.get(key) is not None and not isinstance(d[key], (dict, str)):
                raise ConfigError(f"{key}: expected a mapping")
        return d

    # -- construction ------------------------------------------------------------------
    @classmethod
    def build(cls, d: dict, sources: bool = True) -> "Recipe":
        """Validate a recipe mapping; a bad field is a one-line :class:`ConfigError`.
        ``sources=False``: the generation sources and mix are taken as checked before (see
        :meth:`GenerationConfig.from_dict`)."""
        try:
            recipe = cls.model_validate(d, context={"sources": sources})
        except ValidationError as err:
            raise _config_error(err) from None
        recipe._given = copy.deepcopy(d)
        return recipe

    @classmethod
    def load(cls, name_or_path) -> "Recipe":
        """A built-in recipe by name, a YAML file, a mapping (validated), or a ``Recipe`` (as is)."""
        if isinstance(name_or_path, Recipe):
            return name_or_path
        if isinstance(name_or_path, dict):
            return cls.build(name_or_path)
        return cls.build(read_recipe(name_or_path))

    def with_seed(self, seed: int) -> "Recipe":
        """The same recipe with another seed (``generate --seed``)."""
        seed = _seed(seed)
        out = self.model_copy(update={"seed": seed, "generation": dataclasses.replace(self.generation, seed=seed)})
        out._given = {**self._given, "seed": seed}
        return out

    # -- views -------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The recipe as given (a copy), e.g. to write it back as YAML."""
        return copy.deepcopy(self._given)

    def section(self, key: str) -> Any:
        """A top-level entry as given (``None`` when absent): what the stage fingerprints hash.
        Do not modify it."""
        return self._given.get(key)

    def resolved(self) -> dict:
        """The recipe with every default filled in, as plain JSON-able data; ``Recipe.build`` of
        it gives back an equal recipe."""
        out = {
            "name": self.name,
            "seed": self.seed,
            "teacher": copy.deepcopy(self.teacher),
            "generation": self.generation.to_dict(),
            "labeling": self.labeling.to_dict(),
            "quality": self.quality.to_dict(),
            "training": self.training.to_dict(),
            "active": self.active.to_dict() if self.active is not None else None,
            "bench": self.bench.to_dict(),
        }
        return json.loads(json.dumps(out))


TOP_LEVEL_KEYS = tuple(Recipe.model_fields)


def _config_error(err: ValidationError) -> ConfigError:
    """One line for pydantic's errors: the first one, with its field path."""
    first = err.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "recipe"
    if first["type"] == "missing" and where == "generation":
        return ConfigError("generation: missing; a recipe needs a generation section with sources and mix")
    if first["type"] == "missing":
        return ConfigError(f"{where}: missing; add it to the recipe")
    cause = (first.get("ctx") or {}).get("error")
    return ConfigError(f"{where}: {cause if cause is not None else first['msg']}")


def read_recipe(name_or_path) -> dict:
    """The plain mapping of a built-in recipe or a YAML file, not validated; relative paths of
    ``generation.sources`` (``smiles_file``, ``paths``) resolved against the file's directory."""
    import yaml

    s = str(name_or_path)
    path = Path(s)
    base = None
    if path.is_file():
        try:
            text = path.read_text()
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(
                f"cannot read recipe '{s}': {err.__class__.__name__}; give a readable YAML file"
            ) from None
        base = path.resolve().parent
    elif s in builtin_recipes():
        text = resources.files("mlff_distiller.generation").joinpath(f"recipes/{s}.yaml").read_text()
    else:
        raise ConfigError(f"recipe '{s}' not found: give a YAML file path or a built-in name "
                          f"({', '.join(builtin_recipes())})")
    try:
        recipe = load_yaml(text)
    except yaml.YAMLError as err:
        raise ConfigError(f"recipe '{s}' is not valid YAML at {yaml_error_text(err)}") from None
    if not isinstance(recipe, dict):
        raise ConfigError(f"recipe '{s}' must be a YAML mapping with keys {', '.join(TOP_LEVEL_KEYS)}")
    if base is not None:
        resolve_source_paths(recipe, base)
    return recipe


__all__ = ["BenchSection", "Recipe", "TOP_LEVEL_KEYS", "read_recipe"]
