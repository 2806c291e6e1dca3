"""The ``generation`` section of a recipe: :class:`GenerationConfig` and its checks.

A whole recipe is one typed object, :class:`mlff_distiller.recipe.Recipe`, built once by
``Recipe.load`` (which reads the YAML); its ``generation`` field is the
:class:`GenerationConfig` built here by :meth:`GenerationConfig.from_dict`. ``load_recipe``
and ``validate_recipe`` remain for callers that want the plain dict or only this section.
Every error is a :class:`~mlff_distiller.errors.ConfigError` whose one line names the field
and what is allowed. See ``docs/recipes.md``.
"""

from __future__ import annotations

import difflib
import inspect
import math
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path

from ..errors import ConfigError
from ..settings import did_you_mean, unknown_keys_error
from . import molecules as mol
from .samplers import SAMPLERS, needs_calculator, validate_params
from .sources import (
    SIZE_DISTRIBUTIONS,
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

GENERATION_KEYS = ("size", "elements", "min_distance_factor", "count", "tiers", "default_tier", "sources", "mix")
SOURCE_KEYS = {
    "molecules": ("smiles", "smiles_file", "conformers", "optimizer"),
    "bulk": ("crystals", "vacancies"),
    "alloy": ("elements", "structure", "a"),
    "file": ("paths", "supercell"),
    "surface": ("crystals", "miller", "layers", "vacuum"),
    "cluster": ("elements", "shapes"),
    "liquid": ("solvent", "solutes", "density", "tolerance", "max_attempts", "vacuum"),
}
SOURCE_CLASSES = {"molecules": MoleculeSource, "bulk": BulkSource, "alloy": AlloySource, "file": FileSource,
                  "surface": SurfaceSource, "cluster": ClusterSource, "liquid": LiquidSource}
MIX_KEYS = ("source", "sampler", "fraction", "count", "params", "size")
SIZE_KEYS = ("min", "max", "distribution")
PATH_KEYS = {"molecules": ("smiles_file",), "file": ("paths",)}


def _unknown(key: str, allowed, where: str) -> ConfigError:
    return unknown_keys_error(where, [key], allowed)


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
        for key in PATH_KEYS.get(spec.get("kind"), ()):
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
    if value is None:
        return parent or SizeRange()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: give {{min, max}} atom counts")
    for key in value:
        if key not in SIZE_KEYS:
            raise _unknown(key, SIZE_KEYS, where)
    base = parent or SizeRange()
    lo, hi = value.get("min", base.min), value.get("max", base.max)
    dist = value.get("distribution", base.distribution)
    for name, v in (("min", lo), ("max", hi)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{where}.{name}: give a positive integer number of atoms, got {v!r}")
    if lo > hi:
        raise ConfigError(f"{where}: impossible size bounds, min {lo} > max {hi} atoms")
    if parent is not None and (lo < parent.min or hi > parent.max):
        raise ConfigError(f"{where}: bounds {lo}-{hi} leave generation.size {parent.min}-{parent.max}; "
                          "narrow them to fit inside")
    if dist not in SIZE_DISTRIBUTIONS:
        raise ConfigError(f"{where}.distribution: '{dist}' unknown; allowed: {', '.join(SIZE_DISTRIBUTIONS)}")
    return SizeRange(int(lo), int(hi), dist)


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


def _tiers(d: dict, w: str) -> tuple[dict, object]:
    """``tiers`` (tier name -> number of structures) and ``default_tier``, checked."""
    tiers = d.get("tiers") or {}
    if not isinstance(tiers, dict):
        raise ConfigError(f"{w}.tiers: give a mapping of tier name -> number of structures, e.g. {{1k: 1000}}")
    tiers = {str(k): v for k, v in tiers.items()}
    for k, v in tiers.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"{w}.tiers.{k}: give a positive number of structures, got {v!r}")
    default_tier = d.get("default_tier")
    if default_tier is not None and str(default_tier) not in tiers:
        raise ConfigError(
            f"{w}.default_tier: '{default_tier}' is not one of the tiers ({', '.join(tiers) or 'none'})"
        )
    return tiers, default_tier


#: defaults of a source entry's keys that are not its class's keyword defaults
_ENTRY_DEFAULTS = {"bulk": {"crystals": "all"}, "surface": {"crystals": "all"}, "molecules": {"smiles": "builtin"}}


def _plain(value):
    """Tuples as lists (what YAML and JSON hold), recursively."""
    return [_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def source_defaults(kind: str, spec: dict | None = None) -> dict:
    """The value each optional key of a ``kind`` source entry takes when left out: its source
    class's keyword default (the one owner), or ``crystals: all`` / ``smiles: builtin``."""
    params = inspect.signature(SOURCE_CLASSES[kind]).parameters
    out = {k: _plain(params[k].default) for k in SOURCE_KEYS[kind]
           if k in params and params[k].default is not inspect.Parameter.empty}
    out.update(_ENTRY_DEFAULTS.get(kind, {}))
    if kind == "molecules" and "smiles_file" in (spec or {}):
        out.pop("smiles")  # a file alone: no built-in library added
    return out


def _source_spec(spec, ws: str, size: SizeRange) -> dict:
    """One ``sources`` entry, its keys checked against its kind and its defaults filled in;
    ``_size`` holds its bounds (inside ``generation.size``) in place of ``size``."""
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
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"{ws}.kind: '{kind}' unknown; allowed: {', '.join(SOURCE_KINDS)}")
    allowed = ("kind", "size") + SOURCE_KEYS[kind]
    for key in spec:
        if key not in allowed:
            raise _unknown(key, allowed, ws)
    given = {k: v for k, v in spec.items() if k != "size"}
    return {"kind": kind, **source_defaults(kind, spec), **given, "_size": _size(spec.get("size"), f"{ws}.size", size)}


def _mix_entry(item, wm: str, src_specs: dict) -> MixEntry:
    """One ``mix`` entry: a defined source, a known sampler with valid params, its size
    bounds (inside the source's) and exactly one of fraction or count."""
    if not isinstance(item, dict):
        raise ConfigError(f"{wm}: expected a mapping with keys {', '.join(MIX_KEYS)}")
    for key in item:
        if key not in MIX_KEYS:
            raise _unknown(key, MIX_KEYS, wm)
    src = item.get("source")
    if src not in src_specs:
        raise ConfigError(f"{wm}.source: '{src}' is not a defined source; defined: {', '.join(src_specs)}")
    sampler = item.get("sampler", "none")
    if sampler not in SAMPLERS:
        raise ConfigError(f"{wm}.sampler: '{sampler}' unknown; allowed: {', '.join(SAMPLERS)}")
    params = validate_params(sampler, item.get("params"), wm)
    esize = _size(item.get("size"), f"{wm}.size", src_specs[src]["_size"])
    frac, cnt = item.get("fraction"), item.get("count")
    if (frac is None) == (cnt is None):
        raise ConfigError(f"{wm}: give exactly one of fraction (share of the tier) or count (structures)")
    if frac is not None and (isinstance(frac, bool) or not isinstance(frac, (int, float)) or not 0 < frac <= 1):
        raise ConfigError(f"{wm}.fraction: give a number in (0, 1], got {frac!r}")
    if cnt is not None and (isinstance(cnt, bool) or not isinstance(cnt, int) or cnt < 1):
        raise ConfigError(f"{wm}.count: give a positive integer, got {cnt!r}")
    return MixEntry(src, sampler, params, esize, float(frac) if frac is not None else None, cnt)


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


def _sources_and_mix(d: dict, size: SizeRange, tiers: dict, count, w: str) -> tuple[dict, list]:
    """The checked ``sources`` (name -> spec with defaults) and ``mix`` (list of :class:`MixEntry`)."""
    sources = d.get("sources")
    if not isinstance(sources, dict) or not sources:
        raise ConfigError(
            f"{w}.sources: give a mapping of source name -> {{kind: ...}}; kinds: {', '.join(SOURCE_KINDS)}"
        )
    src_specs = {str(name): _source_spec(spec, f"{w}.sources.{name}", size) for name, spec in sources.items()}
    mix_raw = d.get("mix")
    if not isinstance(mix_raw, list) or not mix_raw:
        raise ConfigError(f"{w}.mix: give a list of {{source, sampler, fraction|count, params}} entries")
    mix = [_mix_entry(item, f"{w}.mix[{k}]", src_specs) for k, item in enumerate(mix_raw)]
    _check_mix_totals(mix, src_specs, tiers, count, w)
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
        for key in d:
            if key not in GENERATION_KEYS:
                raise _unknown(key, GENERATION_KEYS, w)
        size = _size(d.get("size"), f"{w}.size")
        elements = element_set(d.get("elements"), f"{w}.elements")
        mdf = d.get("min_distance_factor", 0.6)
        if isinstance(mdf, bool) or not isinstance(mdf, (int, float)) or not 0 <= mdf < 2:
            raise ConfigError(f"{w}.min_distance_factor: give a number in [0, 2) (fraction of the covalent-radius sum)")
        tiers, default_tier = _tiers(d, w)
        count = d.get("count")
        if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
            raise ConfigError(f"{w}.count: give a positive number of structures, got {count!r}")
        src_specs, mix = _sources_and_mix(d, size, tiers, count, w) if sources else ({}, [])
        cfg = cls(seed=int(seed), size=size, elements=elements, min_distance_factor=float(mdf), sources=src_specs,
                  mix=mix, tiers=tiers, default_tier=str(default_tier) if default_tier is not None else None,
                  count=count)
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
        smiles = spec.get("smiles")
        entries = []
        if smiles == "builtin":
            entries += mol.builtin_smiles()
        elif isinstance(smiles, list):
            if not all(isinstance(s, str) for s in smiles):
                raise ConfigError(f"{ws}.smiles: give 'builtin' or a list of SMILES strings")
            entries += [mol.MoleculeEntry(s, s) for s in smiles]
        elif smiles is not None:
            raise ConfigError(f"{ws}.smiles: give 'builtin' or a list of SMILES strings")
        if "smiles_file" in spec:
            entries += mol.read_smiles_file(spec["smiles_file"])
        conf = spec["conformers"]
        if isinstance(conf, bool) or not isinstance(conf, int) or conf < 1:
            raise ConfigError(f"{ws}.conformers: give a positive integer, got {conf!r}")
        opt = spec["optimizer"]
        if opt not in mol.OPTIMIZERS:
            raise ConfigError(f"{ws}.optimizer: '{opt}' unknown; allowed: {', '.join(mol.OPTIMIZERS)}")
        return MoleculeSource(name, size, entries, conf, opt, els, cfg.seed, skips)
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
        if "solvent" not in spec:
            raise ConfigError(f"{ws}.solvent: missing; give the solvent SMILES, e.g. O for water")
        solutes = spec["solutes"] or []
        if not isinstance(solutes, list):
            raise ConfigError(f"{ws}.solutes: give a list of SMILES")
        kw = {k: spec[k] for k in ("density", "tolerance", "max_attempts", "vacuum")}
        return LiquidSource(name, size, spec["solvent"], solutes, elements=els, seed=cfg.seed, skips=skips, **kw)
    raise ConfigError(f"{ws}.kind: '{kind}' unknown; allowed: {', '.join(SOURCE_KINDS)}")  # pragma: no cover
