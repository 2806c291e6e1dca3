"""The ``generation`` section of a recipe: :class:`GenerationConfig` and its checks.

A whole recipe is one typed object, :class:`mlff_distiller.recipe.Recipe`, built once by
``Recipe.load`` (which reads the YAML); its ``generation`` field is the
:class:`GenerationConfig` built here by :meth:`GenerationConfig.from_dict`. ``load_recipe``
and ``validate_recipe`` remain for callers that want the plain dict or only this section.

The keys, types and limits of every mapping of the section (the top level, ``size`` bounds,
each ``mix`` entry, each source kind) are typed sections (:mod:`.sections`, built with
:func:`mlff_distiller.settings.build`); ``from_dict`` adds the rules between them: a size range
inside its parent's (a missing bound is the parent's), mix entries naming defined sources,
fractions adding up to 1, every source used. What needs data (crystals, SMILES, files,
elements) is checked by the sources (:mod:`.sources`), sampler parameters by
:func:`.samplers.validate_params`. Every error is a :class:`~mlff_distiller.errors.ConfigError`
whose one line names the field and what is allowed. See ``docs/recipes.md``.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ..settings import build, did_you_mean, field_names
from . import molecules as mol
from .samplers import needs_calculator, validate_params
from .sections import SOURCE_KEYS, SOURCE_SPECS, GenerationSection, MixSpec, plain
from .sources import (
    SOURCE_KINDS,
    AlloySource,
    BulkSource,
    ClusterSource,
    FileSource,
    LiquidSource,
    MoleculeSource,
    SizeRange,
    SkipLog,
    Source,
    SurfaceSource,
    element_set,
)

SOURCE_CLASSES = {"molecules": MoleculeSource, "bulk": BulkSource, "alloy": AlloySource, "file": FileSource,
                  "surface": SurfaceSource, "cluster": ClusterSource, "liquid": LiquidSource}
GENERATION_KEYS = tuple(field_names(GenerationSection))
MIX_KEYS = tuple(field_names(MixSpec))
SIZE_KEYS = tuple(field_names(SizeRange))
PATH_KEYS: dict[str, tuple[str, ...]] = {"molecules": ("smiles_file",), "file": ("paths",)}


def builtin_recipes() -> list[str]:
    root = resources.files("mlff_distiller.generation").joinpath("recipes")
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path) -> dict:
    """A built-in recipe by name (``tiny``, ``quickstart``, ``seed-m2``), a YAML file or a dict,
    validated (every section), as a plain dict: ``Recipe.load(name_or_path).to_dict()``.

    Relative paths inside ``generation.sources`` (``smiles_file``, ``paths``) are resolved
    against the recipe's directory. The pipeline and ``generate`` use the typed
    :class:`~mlff_distiller.recipe.Recipe` itself.
    """
    from ..recipe import Recipe

    return Recipe.load(name_or_path).to_dict()


def resolve_source_paths(recipe: dict, base: Path) -> None:
    """Make the relative file paths of ``generation.sources`` (``smiles_file``, ``paths``)
    relative to ``base`` (the recipe's directory), in place."""
    sources = (recipe.get("generation") or {}).get("sources") if isinstance(recipe.get("generation"), dict) else None
    if not isinstance(sources, dict):
        return
    for spec in sources.values():
        if not isinstance(spec, dict):
            continue
        for key in PATH_KEYS.get(str(spec.get("kind")), ()):
            value = spec.get(key)
            if isinstance(value, str):
                spec[key] = str(base / value) if not Path(value).is_absolute() else value
            elif isinstance(value, list):
                spec[key] = [str(base / v) if isinstance(v, str) and not Path(v).is_absolute() else v for v in value]


def validate_recipe(recipe: dict) -> "GenerationConfig":
    """Validate a recipe dict (every section); returns its typed generation config."""
    from ..recipe import Recipe

    return Recipe.build(recipe).generation


def _size(value, where: str, parent: SizeRange | None = None) -> SizeRange:
    """The size bounds at ``where``: the keys given, the others the ``parent``'s (or the
    defaults); inside the parent's bounds."""
    if value is None:
        return parent or SizeRange()
    if not isinstance(value, dict):
        return build(SizeRange, value, where)  # the one "must be a mapping" message
    size = build(SizeRange, {**asdict(parent or SizeRange()), **value}, where)
    if parent is not None and (size.min < parent.min or size.max > parent.max):
        raise ConfigError(f"{where}: bounds {size.min}-{size.max} leave generation.size {parent.min}-{parent.max}; "
                          "narrow them to fit inside")
    return size


@dataclass
class MixEntry:
    """One line of the mix: ``count`` structures from ``source`` perturbed by ``sampler``."""

    source: str
    sampler: str
    params: dict
    size: SizeRange
    fraction: float | None = None
    count: int | None = None

    @property
    def needs_calculator(self) -> bool:
        return needs_calculator(self.sampler, self.params)


#: defaults of a source entry's keys that are not its class's keyword defaults
_ENTRY_DEFAULTS = {"bulk": {"crystals": "all"}, "surface": {"crystals": "all"}, "molecules": {"smiles": "builtin"}}


def source_defaults(kind: str, spec: dict | None = None) -> dict:
    """The value each optional key of a ``kind`` source entry takes when left out: its source
    class's keyword default (the one owner), or ``crystals: all`` / ``smiles: builtin``."""
    params = inspect.signature(SOURCE_CLASSES[kind]).parameters
    out = {k: plain(params[k].default) for k in SOURCE_KEYS[kind]
           if k in params and params[k].default is not inspect.Parameter.empty}
    out.update(_ENTRY_DEFAULTS.get(kind, {}))
    if kind == "molecules" and "smiles_file" in (spec or {}):
        out.pop("smiles")  # a file alone: no built-in library added
    return out


def _source_kind(spec, ws: str) -> str:
    """The ``kind`` of one ``sources`` entry (a misspelt ``kind`` key named as such)."""
    if not isinstance(spec, dict):
        raise ConfigError(f"{ws}: give a mapping with a kind ({', '.join(SOURCE_KINDS)}), got {spec!r}")
    if "kind" not in spec:
        any_kind = {k for keys in SOURCE_KEYS.values() for k in keys} | {"kind", "size"}
        stray = [k for k in spec if k not in any_kind or difflib.get_close_matches(str(k), ["kind"], n=1)]
        if stray:  # a misspelt 'kind' (or another typo): name it rather than only "missing"
            hint = did_you_mean(stray[0], sorted(any_kind))
            raise ConfigError(f"{ws}: unknown key '{stray[0]}'{hint}, and {ws}.kind is missing; "
                              f"kinds: {', '.join(SOURCE_KINDS)}")
        raise ConfigError(f"{ws}.kind: missing; allowed: {', '.join(SOURCE_KINDS)}")
    kind = spec["kind"]
    if kind not in SOURCE_SPECS:
        hint = did_you_mean(kind, SOURCE_KINDS) if isinstance(kind, str) else ""
        raise ConfigError(f"{ws}.kind: unknown value {kind!r}{hint}; allowed: {', '.join(SOURCE_KINDS)}")
    return kind


def _source_spec(spec, ws: str, size: SizeRange) -> dict:
    """One ``sources`` entry, checked by its kind's section, its defaults filled in;
    ``_size`` holds its bounds (inside ``generation.size``) in place of ``size``."""
    kind = _source_kind(spec, ws)
    given = {**source_defaults(kind, spec), **{k: v for k, v in spec.items() if k != "kind"}}
    checked: Any = build(SOURCE_SPECS[kind], {"kind": kind, **given}, ws)
    keys = [k for k in given if k != "size"]
    return {"kind": kind, **{k: getattr(checked, k) for k in keys}, "_size": _size(checked.size, f"{ws}.size", size)}


def _mix_entry(item, wm: str, src_specs: dict) -> MixEntry:
    """One ``mix`` entry: a defined source, a known sampler with valid params, its size
    bounds (inside the source's) and exactly one of fraction or count."""
    entry = build(MixSpec, item, wm)
    if entry.source not in src_specs:
        raise ConfigError(f"{wm}.source: '{entry.source}' is not a defined source; defined: {', '.join(src_specs)}")
    params = validate_params(entry.sampler, entry.params, wm)
    esize = _size(entry.size, f"{wm}.size", src_specs[entry.source]["_size"])
    return MixEntry(entry.source, entry.sampler, params, esize, entry.fraction, entry.count)


def _check_mix_totals(mix: list, src_specs: dict, tiers: dict, count, w: str) -> None:
    """Fractions in every entry (adding up to 1, with a total to share) or counts in every
    entry (no tiers); every source used by some entry."""
    uses_fraction = [e.fraction is not None for e in mix]
    if any(uses_fraction) and not all(uses_fraction):
        raise ConfigError(f"{w}.mix: use fraction in every entry or count in every entry, not both")
    if all(uses_fraction):
        total = sum(e.fraction for e in mix)
        if abs(total - 1.0) > 0.01:
            raise ConfigError(f"{w}.mix: fractions add up to {total:.3f}; they must add up to 1")
        if not tiers and count is None:
            raise ConfigError(f"{w}: fractions need a total; give count or tiers")
    elif tiers:
        raise ConfigError(f"{w}.mix: tiers need fractions in the mix entries, not counts")
    used = {e.source for e in mix}
    unused = [n for n in src_specs if n not in used]
    if unused:
        raise ConfigError(f"{w}.sources.{unused[0]}: defined but used by no mix entry; use it or remove it")


def _sources_and_mix(sec: GenerationSection, size: SizeRange, w: str) -> tuple[dict, list]:
    """The checked ``sources`` (name -> spec with defaults) and ``mix`` (list of :class:`MixEntry`)."""
    kinds = ", ".join(SOURCE_KINDS)
    if sec.sources is None:
        raise ConfigError(f"{w}.sources: missing; give a mapping of source name -> {{kind: ...}}; kinds: {kinds}")
    src_specs = {str(name): _source_spec(spec, f"{w}.sources.{name}", size) for name, spec in sec.sources.items()}
    if sec.mix is None:
        raise ConfigError(f"{w}.mix: missing; give a list of {{source, sampler, fraction|count, params}} entries")
    mix = [_mix_entry(item, f"{w}.mix[{k}]", src_specs) for k, item in enumerate(sec.mix)]
    _check_mix_totals(mix, src_specs, sec.tiers or {}, sec.count, w)
    return src_specs, mix


@dataclass
class GenerationConfig:
    """Validated ``generation`` section (see ``docs/recipes.md`` for every field)."""

    seed: int
    size: SizeRange
    elements: set | None
    min_distance_factor: float
    sources: dict
    mix: list
    tiers: dict = field(default_factory=dict)
    default_tier: str | None = None
    count: int | None = None

    @classmethod
    def from_dict(cls, d: dict, seed: int = 0, sources: bool = True) -> "GenerationConfig":
        """The checked section. ``sources=False`` reads only its own keys (size, elements, tiers,
        count...) and leaves ``sources`` and ``mix`` empty: for a section checked before (a
        mapping from :func:`load_recipe`) whose tiers alone are needed (``pipeline.plan_recipe``)."""
        w = "generation"
        sec = build(GenerationSection, d)  # keys, types, limits, the default tier
        size = _size(sec.size, f"{w}.size")
        elements = element_set(sec.elements, f"{w}.elements")
        src_specs, mix = _sources_and_mix(sec, size, w) if sources else ({}, [])
        cfg = cls(seed=int(seed), size=size, elements=elements, min_distance_factor=sec.min_distance_factor,
                  sources=src_specs, mix=mix, tiers=dict(sec.tiers or {}), default_tier=sec.default_tier,
                  count=sec.count)
        if sources:
            cfg.build_sources()  # deep checks: crystals, files, SMILES, feasibility of the size bounds
        return cfg

    def to_dict(self) -> dict:
        """The section with every default filled in, as plain data; ``from_dict`` of it gives
        an equal config (the seed is the recipe's, not part of the section)."""
        sources = {name: {**{k: v for k, v in spec.items() if k != "_size"}, "size": asdict(spec["_size"])}
                   for name, spec in self.sources.items()}
        mix = []
        for e in self.mix:
            share = {"fraction": e.fraction} if e.fraction is not None else {"count": e.count}
            mix.append({"source": e.source, "sampler": e.sampler, **share, "params": dict(e.params),
                        "size": asdict(e.size)})
        return {"size": asdict(self.size), "elements": sorted(self.elements) if self.elements is not None else None,
                "min_distance_factor": self.min_distance_factor, "count": self.count, "tiers": dict(self.tiers),
                "default_tier": self.default_tier, "sources": sources, "mix": mix}

    # ------------------------------------------------------------------------------------
    def total(self, tier: str | None = None) -> int:
        """Number of structures for ``tier`` (or the default tier, or ``count``)."""
        if tier is not None:
            if str(tier) not in self.tiers:
                raise ConfigError(f"tier '{tier}' unknown; this recipe has: {', '.join(self.tiers) or 'no tiers'}")
            return self.tiers[str(tier)]
        if self.mix[0].count is not None:
            return sum(e.count for e in self.mix)
        if self.default_tier is not None:
            return self.tiers[self.default_tier]
        if self.count is not None:
            return self.count
        return self.tiers[next(iter(self.tiers))]

    def resolve_tier(self, tier: str | None) -> str | None:
        """The tier a run uses: the one asked for, else the default tier (``None`` = ``count`` / counts)."""
        if tier is not None:
            self.total(tier)
            return str(tier)
        if self.mix[0].count is not None or not self.tiers:
            return None
        if self.default_tier is not None:
            return self.default_tier
        return None if self.count is not None else next(iter(self.tiers))

    def counts(self, tier: str | None = None) -> list[int]:
        """Structures per mix entry; fractions are turned into counts by largest remainder."""
        if self.mix[0].count is not None:
            if tier is not None:
                raise ConfigError("this recipe's mix gives counts, not fractions; it has no tiers")
            return [e.count for e in self.mix]
        n = self.total(tier)
        raw = [e.fraction / sum(x.fraction for x in self.mix) * n for e in self.mix]
        out = [math.floor(r) for r in raw]
        for k in sorted(range(len(raw)), key=lambda i: -(raw[i] - out[i]))[: n - sum(out)]:
            out[k] += 1
        return out

    def build_sources(self, skips: SkipLog | None = None) -> list[Source]:
        """One source object per mix entry (each with that entry's size range)."""
        skips = skips if skips is not None else SkipLog()
        built = []
        for entry in self.mix:
            spec = self.sources[entry.source]
            built.append(_make_source(entry.source, spec, entry.size, self, skips))
        return built

    @property
    def needs_calculator(self) -> bool:
        return any(e.needs_calculator for e in self.mix)


def _make_source(name: str, spec: dict, size: SizeRange, cfg: GenerationConfig, skips: SkipLog) -> Source:
    """The source of one checked ``sources`` entry (its defaults filled in by ``_source_spec``)."""
    kind = spec["kind"]
    ws = f"generation.sources.{name}"
    els = cfg.elements
    if kind == "molecules":
        smiles = spec.get("smiles")  # 'builtin', a list of SMILES or None (typed by MoleculesSpec)
        entries = mol.builtin_smiles() if smiles == "builtin" else [mol.MoleculeEntry(s, s) for s in smiles or []]
        if spec.get("smiles_file") is not None:
            entries += mol.read_smiles_file(spec["smiles_file"])
        return MoleculeSource(name, size, entries, spec["conformers"], spec["optimizer"], els, cfg.seed, skips)
    if kind == "bulk":
        return BulkSource(name, size, spec["crystals"], els, spec["vacancies"])
    if kind == "alloy":
        return AlloySource(name, size, spec.get("elements"), spec["structure"], spec["a"], els)
    if kind == "file":
        return FileSource(name, size, spec.get("paths"), spec["supercell"], els)
    if kind == "surface":
        kw = {k: spec[k] for k in ("miller", "layers", "vacuum")}
        return SurfaceSource(name, size, spec["crystals"], elements=els, **kw)
    if kind == "cluster":
        return ClusterSource(name, size, spec.get("elements"), spec["shapes"], allowed=els)
    if kind == "liquid":
        solutes = spec["solutes"] or []
        kw = {k: spec[k] for k in ("density", "tolerance", "max_attempts", "vacuum")}
        return LiquidSource(name, size, spec["solvent"], solutes, elements=els, seed=cfg.seed, skips=skips, **kw)
    raise ConfigError(f"{ws}.kind: '{kind}' unknown; allowed: {', '.join(SOURCE_KINDS)}")  # pragma: no cover
