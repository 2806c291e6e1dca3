"""The typed sections of a recipe's ``generation``: keys, types and limits.

Each mapping of the section is a pydantic dataclass declared with
:func:`mlff_distiller.settings.section` (unknown keys, wrong types and values out of range are
one-line :class:`~mlff_distiller.errors.ConfigError` messages naming the field):

* :class:`GenerationSection`: the top level (``size``, ``elements``, ``min_distance_factor``,
  ``count``, ``tiers``, ``default_tier``, ``sources``, ``mix``), with the tier rule;
* :class:`~mlff_distiller.generation.sources.SizeRange`: ``size`` bounds (``min <= max`` atoms);
* :class:`MixSpec`: one ``mix`` entry (exactly one of ``fraction`` and ``count``);
* one section per source kind (:data:`SOURCE_SPECS`, ``kind -> section``) for that kind's keys.

What needs data (crystal names, SMILES, files, the elements of ``generation.elements``, a size
range inside its parent's, sampler parameters) is checked where the data is:
:mod:`~mlff_distiller.generation.sources`, :func:`~mlff_distiller.generation.samplers.validate_params`
and :meth:`~mlff_distiller.generation.recipe.GenerationConfig.from_dict`. Units are ASE's:
lengths in A, densities in g/cm^3.
"""

from __future__ import annotations

import inspect
from dataclasses import KW_ONLY
from typing import Annotated, Any, Literal, get_args

from pydantic import BeforeValidator, Field

from ..errors import ConfigError
from ..settings import Bool, Float, Int, Str, copied_default, field_names, limits, section, where_of
from .molecules import OPTIMIZERS
from .samplers import SAMPLERS
from .sources import (
    CLUSTER_SHAPES,
    SOURCE_KINDS,
    AlloySource,
    BulkSource,
    ClusterSource,
    FileSource,
    LiquidSource,
    MoleculeSource,
    SurfaceSource,
)

Sampler = Literal["none", "rattle", "normal_modes", "md", "rattle_relax", "high_energy"]
Optimizer = Literal["mmff", "uff", "none"]
ClusterShape = Literal["icosahedron", "decahedron", "octahedron"]
if get_args(Sampler) != SAMPLERS or get_args(Optimizer) != OPTIMIZERS or get_args(ClusterShape) != CLUSTER_SHAPES:
    raise ImportError("generation.sections: a choice list differs from its owner's")  # pragma: no cover


def _name(value):
    """A tier name: YAML reads ``1000: 12`` with an integer key; it is the name ``'1000'``."""
    return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value


def plain(value):
    """Tuples as lists (what YAML and JSON hold), recursively."""
    return [plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _default(source: type, key: str) -> Any:
    """The field default of a source entry's ``key``: the source class's keyword default (its
    one owner), tuples as lists."""
    value = plain(inspect.signature(source).parameters[key].default)
    return copied_default(value)


TierName = Annotated[Str, BeforeValidator(_name)]
#: a list of element symbols (each checked by the source)
_Symbols = Annotated[list[Str], limits(min_length=1, allowed="a non-empty list of element symbols")]
_CRYSTALS = "'all' or a list of crystal names (Cu-fcc) or {formula, structure, a} mappings"
_Crystals = Annotated[Str | list, limits(allowed=_CRYSTALS)]
_RANGE = "an integer >= {} or [min, max]"
_SHAPES = f"a list of shapes among {', '.join(CLUSTER_SHAPES)}"


# -- the top level and its parts --------------------------------------------------------------
@section("generation")
class GenerationSection:
    """The keys of ``generation`` and their types (see ``docs/recipes.md``); ``sources`` and
    ``mix`` entries are checked by their own sections."""

    size: dict | None = None  # a SizeRange mapping; None = 10-500 atoms, loguniform
    elements: Annotated[Literal["any"] | list[Str] | None, limits(
        allowed="a list of element symbols or 'any'")] = None
    # closest pair >= factor x (r_cov_i + r_cov_j)
    min_distance_factor: Annotated[Float, limits(
        ge=0, lt=2, allow_inf_nan=False, note="fraction of the covalent-radius sum")] = 0.6
    count: Annotated[Int | None, limits(ge=1, note="number of structures")] = None
    # tier name -> number of structures, e.g. {1k: 1000}
    tiers: dict[TierName, Annotated[Int, Field(ge=1)]] | None = None
    default_tier: Annotated[TierName | None, limits(allowed="the name of one of the tiers")] = None
    sources: Annotated[dict | None, limits(
        min_length=1, allowed=f"a mapping of source name -> {{kind: ...}}; kinds: {', '.join(SOURCE_KINDS)}")] = None
    mix: Annotated[list | None, limits(
        min_length=1, allowed="a list of {source, sampler, fraction|count, params} entries")] = None

    def __post_init__(self) -> None:
        tiers = self.tiers or {}
        if self.default_tier is not None and self.default_tier not in tiers:
            raise ConfigError(f"generation.default_tier: '{self.default_tier}' is not one of the tiers "
                              f"({', '.join(tiers) or 'none'})")


@section("generation.mix[]")
class MixSpec:
    """One ``mix`` entry: ``count`` structures (or a ``fraction`` of the tier) from ``source``
    perturbed by ``sampler`` with ``params``; ``size`` narrows the source's size bounds."""

    source: Str
    sampler: Sampler = "none"
    fraction: Annotated[Float | None, limits(gt=0, le=1, note="share of the tier")] = None
    count: Annotated[Int | None, limits(ge=1, note="number of structures")] = None
    params: dict | None = None  # checked by samplers.validate_params
    size: dict | None = None  # a SizeRange mapping inside the source's

    def __post_init__(self) -> None:
        if (self.fraction is None) == (self.count is None):
            raise ConfigError(f"{where_of(self)}: give exactly one of fraction (share of the tier) or count "
                              "(structures)")


# -- one section per source kind --------------------------------------------------------------
@section("generation.sources[]")
class MoleculesSpec:
    """``kind: molecules``: SMILES (``builtin`` = the built-in library) embedded as conformers."""

    kind: Literal["molecules"]
    size: dict | None = None
    _: KW_ONLY
    smiles: Annotated[Literal["builtin"] | list[Str] | None, limits(
        allowed="'builtin' or a list of SMILES strings")] = None
    smiles_file: Str | None = None
    conformers: Annotated[Int, limits(ge=1)] = _default(MoleculeSource, "conformers")
    optimizer: Optimizer = _default(MoleculeSource, "optimizer")


@section("generation.sources[]")
class BulkSpec:
    """``kind: bulk``: supercells of crystals, with ``vacancies`` (an integer or [min, max])."""

    kind: Literal["bulk"]
    size: dict | None = None
    _: KW_ONLY
    crystals: _Crystals = "all"
    vacancies: Annotated[Int | list[Int], limits(allowed=_RANGE.format(0))] = _default(BulkSource, "vacancies")


@section("generation.sources[]")
class AlloySpec:
    """``kind: alloy``: random substitutional alloys of ``elements`` on a ``structure`` lattice."""

    kind: Literal["alloy"]
    size: dict | None = None
    _: KW_ONLY
    elements: Annotated[list[Str], limits(min_length=2, allowed="a list of at least two element symbols")]
    structure: Literal["fcc", "bcc", "hcp"] = _default(AlloySource, "structure")
    a: Annotated[Float | None, limits(gt=0, allow_inf_nan=False, unit="A", note="null = from the elements")] = (
        _default(AlloySource, "a"))


@section("generation.sources[]")
class FileSpec:
    """``kind: file``: structures read from files (``supercell``: repeat small periodic cells)."""

    kind: Literal["file"]
    size: dict | None = None
    _: KW_ONLY
    paths: Annotated[Str | list[Str], limits(allowed="a structure file or a list of them")]
    supercell: Bool = _default(FileSource, "supercell")


@section("generation.sources[]")
class SurfaceSpec:
    """``kind: surface``: slabs of crystals cut along ``miller`` planes, ``vacuum`` A thick."""

    kind: Literal["surface"]
    size: dict | None = None
    _: KW_ONLY
    crystals: _Crystals = "all"
    miller: Annotated[list[list[Int]], limits(
        allowed="a list of three-integer Miller indices such as [1, 1, 1]")] = _default(SurfaceSource, "miller")
    layers: Annotated[Int | list[Int], limits(allowed=_RANGE.format(1))] = _default(SurfaceSource, "layers")
    vacuum: Annotated[Float, limits(gt=0, allow_inf_nan=False, unit="A")] = _default(SurfaceSource, "vacuum")


@section("generation.sources[]")
class ClusterSpec:
    """``kind: cluster``: magic-number nanoclusters of ``elements`` in ``shapes``."""

    kind: Literal["cluster"]
    size: dict | None = None
    _: KW_ONLY
    elements: _Symbols
    shapes: Annotated[list[ClusterShape], limits(min_length=1, allowed=_SHAPES)] = _default(ClusterSource, "shapes")


@section("generation.sources[]")
class LiquidSpec:
    """``kind: liquid``: boxes of ``solvent`` molecules (with ``solutes``) at ``density`` g/cm^3."""

    kind: Literal["liquid"]
    size: dict | None = None
    _: KW_ONLY
    solvent: Str | None = None  # SMILES, e.g. O for water (required)
    solutes: list[Str] | None = _default(LiquidSource, "solutes")  # SMILES
    density: Annotated[Float, limits(gt=0, allow_inf_nan=False, unit="g/cm^3")] = _default(LiquidSource, "density")
    # minimum intermolecular distance in A
    tolerance: Annotated[Float, limits(gt=0, allow_inf_nan=False, unit="A")] = _default(LiquidSource, "tolerance")
    max_attempts: Annotated[Int, limits(ge=1)] = _default(LiquidSource, "max_attempts")
    vacuum: Annotated[Float, limits(ge=0, allow_inf_nan=False, unit="A", note="0 = a periodic liquid")] = (
        _default(LiquidSource, "vacuum"))

    def __post_init__(self) -> None:
        if self.solvent is None:
            raise ConfigError(f"{where_of(self)}.solvent: missing; give the solvent SMILES, e.g. O for water")


#: the section of each source kind
SOURCE_SPECS: dict[str, type] = {
    "molecules": MoleculesSpec, "bulk": BulkSpec, "alloy": AlloySpec, "file": FileSpec,
    "surface": SurfaceSpec, "cluster": ClusterSpec, "liquid": LiquidSpec,
}
#: the keys of each source kind besides ``kind`` and ``size``
SOURCE_KEYS: dict[str, tuple[str, ...]] = {kind: tuple(field_names(cls))[2:] for kind, cls in SOURCE_SPECS.items()}
if tuple(SOURCE_SPECS) != SOURCE_KINDS:
    raise ImportError("generation.sections: the source kinds differ from sources.SOURCE_KINDS")  # pragma: no cover
