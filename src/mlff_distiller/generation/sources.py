"""Structure sources: where the root structures of a pool come from.

Every source is built from one recipe entry (``generation.sources.<name>``) and hands out
root structures with :meth:`Source.make_root`, deterministically from the root index and a
random generator. A root carries its provenance ``source`` string (``smiles:CCO``,
``bulk:Cu-fcc``, ``file:x.cif``, ...) and a ``group`` id shared by everything derived from
it. Sizes are drawn from the recipe's size range (log-uniform by default) for every source
whose size can be chosen (crystals, slabs, clusters, liquids); molecules have their own size
and those outside the range are left out.

Kinds: ``molecules``, ``bulk``, ``alloy``, ``file``, ``surface``, ``cluster``, ``liquid``.
Units: Angstrom, g/cm^3 (liquid density).
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, get_args

import numpy as np
import yaml
from ase import Atoms
from ase.data import atomic_masses, atomic_numbers, reference_states

from ..errors import ConfigError
from ..settings import Int, build, limits, section, unknown_keys_error, where_of
from . import molecules as mol
from .geometry import check_symbol, random_rotations, respects_min_distance, supercell_repeats

SOURCE_KINDS = ("molecules", "bulk", "alloy", "file", "surface", "cluster", "liquid")
STRUCTURES = ("fcc", "bcc", "hcp", "diamond", "rocksalt", "zincblende", "wurtzite", "cesiumchloride",
              "fluorite", "perovskite", "ice-ic")
SizeDistribution = Literal["loguniform", "uniform"]
SIZE_DISTRIBUTIONS = get_args(SizeDistribution)


@section("generation.size", frozen=True)
class SizeRange:
    """Allowed atom counts ``[min, max]`` and how targets are drawn within them (a typed
    section: ``generation.size``, a source's or a mix entry's ``size``)."""

    min: Annotated[Int, limits(ge=1, unit="atoms")] = 10
    max: Annotated[Int, limits(ge=1, unit="atoms")] = 500
    distribution: SizeDistribution = "loguniform"

    def __post_init__(self) -> None:
        if self.min > self.max:
            raise ConfigError(f"{where_of(self)}: impossible size bounds, min {self.min} > max {self.max} atoms")

    def draw(self, rng: np.random.Generator) -> int:
        if self.distribution == "uniform":
            return int(rng.integers(self.min, self.max + 1))
        return int(round(math.exp(rng.uniform(math.log(self.min), math.log(self.max)))))

    def contains(self, n: int) -> bool:
        return self.min <= n <= self.max


@dataclass
class Root:
    atoms: Atoms
    source: str
    group: str


@dataclass
class SkipLog:
    """Items a run leaves out (invalid SMILES, failed embeddings), each with a one-line reason."""

    items: list = field(default_factory=list)
    echo: object = None  # callable(str) or None

    def skip(self, item: str, reason: str) -> None:
        if any(it == item for it, _ in self.items):
            return
        self.items.append((item, reason))
        if self.echo:
            self.echo(f"skipped {item}: {reason}")


# ----------------------------------------------------------------------------------------- crystals
def builtin_crystals() -> dict[str, dict]:
    """Built-in prototype list (``generation/data/crystals.yaml``): name -> {formula, structure, a[, c]}."""
    return {k: dict(v) for k, v in _crystal_table().items()}


@functools.lru_cache(maxsize=1)
def _crystal_table() -> dict[str, dict]:
    text = resources.files("mlff_distiller.generation").joinpath("data/crystals.yaml").read_text()
    return yaml.safe_load(text)


def formula_symbols(formula: str, where: str) -> list[str]:
    """Element symbols of a formula such as ``SrTiO3`` (each checked)."""
    import re

    tokens = re.findall(r"([A-Z][a-z]?)(\d*)", formula)
    if not tokens or "".join(s + n for s, n in tokens) != formula:
        raise ConfigError(f"{where}: cannot read formula '{formula}'; write it like NaCl or SrTiO3")
    out = []
    for sym, _ in tokens:
        check_symbol(sym, where)
        out.append(sym)
    return out


def build_crystal(spec: dict, where: str = "crystal") -> Atoms:
    """Conventional (cubic / orthorhombic where available) unit cell of a prototype, in A."""
    from ase.build import bulk

    structure = spec.get("structure")
    if structure not in STRUCTURES:
        raise ConfigError(f"{where}.structure: '{structure}' unknown; allowed: {', '.join(STRUCTURES)}")
    formula = str(spec.get("formula", ""))
    symbols = formula_symbols(formula, f"{where}.formula")
    a = spec.get("a")
    if a is None:
        a = _reference_a(symbols[0], structure, where) if len(symbols) == 1 else None
    if a is None or not float(a) > 0:
        raise ConfigError(f"{where}.a: give a positive lattice constant in Angstrom for {formula} ({structure})")
    a = float(a)
    if structure == "perovskite":  # ABO3, cubic Pm-3m, 5 atoms
        if len(symbols) != 3:
            raise ConfigError(f"{where}.formula: a perovskite needs three elements (ABX3), got '{formula}'")
        A, B, X = symbols
        frac = [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]]
        return Atoms([A, B, X, X, X], scaled_positions=frac, cell=[a, a, a], pbc=True)
    if structure == "ice-ic":
        if symbols != ["H", "O"] or formula.replace(" ", "") not in ("H2O", "OH2"):
            raise ConfigError(f"{where}.formula: the ice-ic structure is water ice; give formula H2O, got '{formula}'")
        return ice_ic_cell(a)
    kwargs = {"a": a}
    if structure in ("hcp", "wurtzite"):
        kwargs["c"] = float(spec.get("c") or a * math.sqrt(8.0 / 3.0))
        kwargs["orthorhombic"] = True
    else:
        kwargs["cubic"] = True
    name = formula if structure not in ("fcc", "bcc", "hcp", "diamond") else symbols[0]
    try:
        return bulk(name, structure, **kwargs)
    except (ValueError, KeyError, RuntimeError) as err:
        raise ConfigError(
            f"{where}: ASE cannot build {formula} as {structure} ({err}); check formula and structure"
        ) from None


def ice_ic_cell(a: float = 6.35, oh: float = 0.9572) -> Atoms:
    """Proton-ordered cubic ice (ice Ic), conventional cell of 8 H2O, ``a`` and ``oh`` in A.

    The oxygens sit on a diamond lattice. Of the four tetrahedral bonds of each oxygen, an
    oxygen of the first sublattice carries its hydrogens on the bonds along (1,1,1) and
    (1,-1,-1), one of the second on the bonds along (1,-1,1) and (1,1,-1): every bond then
    holds exactly one hydrogen and every oxygen two (the Bernal-Fowler ice rules).
    """
    from ase.build import bulk

    oxygens = bulk("Si", "diamond", a=a, cubic=True)
    frac = oxygens.get_scaled_positions()
    first = [bool(np.all(np.abs(2 * f - np.round(2 * f)) < 1e-6)) for f in frac]  # fcc sites: first sublattice
    own = {True: ((1, 1, 1), (1, -1, -1)), False: ((1, -1, 1), (1, 1, -1))}
    symbols, positions = [], []
    for pos, is_first in zip(oxygens.positions, first):
        symbols.append("O")
        positions.append(pos)
        for d in own[is_first]:
            symbols.append("H")
            positions.append(pos + oh * np.array(d, dtype=float) / math.sqrt(3.0))
    atoms = Atoms(symbols, positions=positions, cell=oxygens.cell, pbc=True)
    atoms.wrap()
    return atoms


def _reference_a(symbol: str, structure: str, where: str) -> float | None:
    ref = reference_states[atomic_numbers[symbol]]
    if ref and ref.get("symmetry") == structure and "a" in ref:
        return float(ref["a"])
    for spec in builtin_crystals().values():
        if spec["formula"] == symbol and spec["structure"] == structure:
            return float(spec["a"])
    return None


def _resolve_crystals(value, allowed: set[str] | None, where: str) -> list[tuple[str, dict]]:
    """``all`` | list of built-in names | list of {formula, structure, a[, c]} dicts."""
    table = builtin_crystals()
    if value in (None, "all"):
        items = list(table.items())
        if allowed is not None:
            items = [(k, v) for k, v in items if set(formula_symbols(v["formula"], where)) <= allowed]
        if not items:
            raise ConfigError(f"{where}: no built-in crystal uses only the elements {sorted(allowed)}; "
                              "list crystals explicitly or widen generation.elements")
        return items
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: expected 'all' or a list of crystal names / dicts")
    items = []
    for k, item in enumerate(value):
        if isinstance(item, str):
            if item not in table:
                raise ConfigError(f"{where}[{k}]: unknown crystal '{item}'; built-in names look like "
                                  f"Cu-fcc or NaCl-rocksalt ({len(table)} available, see docs/generation.md), "
                                  "or give {formula, structure, a}")
            items.append((item, table[item]))
        elif isinstance(item, dict):
            bad = set(item) - {"formula", "structure", "a", "c"}
            if bad:
                raise unknown_keys_error(f"{where}[{k}]", sorted(bad), ("formula", "structure", "a", "c"))
            items.append((f"{item.get('formula')}-{item.get('structure')}", dict(item)))
        else:
            raise ConfigError(f"{where}[{k}]: expected a crystal name or a dict")
    for name, spec in items:
        syms = set(formula_symbols(str(spec.get("formula", "")), f"{where}: {name}.formula"))
        if allowed is not None and not syms <= allowed:
            raise ConfigError(f"{where}: crystal {name} uses {sorted(syms - allowed)[0]}, which is not in "
                              "generation.elements; add it there or drop the crystal")
    return items


# ----------------------------------------------------------------------------------------- sources
class Source:
    """Base class: ``make_root(index, rng)`` returns a :class:`Root` or ``None`` (try the next index)."""

    kind = ""

    def __init__(self, name: str, size: SizeRange):
        self.name = name
        self.size = size

    def make_root(self, index: int, rng: np.random.Generator) -> Root | None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _checked(self, **values):
        """``values`` (this source's keywords) checked by its kind's recipe section
        (:data:`~mlff_distiller.generation.sections.SOURCE_SPECS`, the one owner of their types and
        limits): a source built in Python gets the same one-line messages as a recipe."""
        from .sections import SOURCE_SPECS  # sections imports this module

        return build(SOURCE_SPECS[self.kind], {"kind": self.kind, **values}, f"generation.sources.{self.name}")

    _order: np.ndarray | None = None

    def set_order(self, rng: np.random.Generator, n: int) -> None:
        """Visit the ``n`` candidates in a seeded random order (so an entry with fewer roots than
        candidates still samples the whole list evenly, not its first lines)."""
        self._order = rng.permutation(n)

    def _pick(self, index: int, n: int) -> tuple[int, int]:
        """(candidate, round) for root ``index``: every candidate once per round."""
        k = index % n
        if self._order is not None and len(self._order) == n:
            k = int(self._order[k])
        return k, index // n

    @property
    def n_candidates(self) -> int:
        return 1


class MoleculeSource(Source):
    """Molecules from SMILES (built-in library, a list, or a file), several conformers each."""

    kind = "molecules"

    def __init__(self, name, size, smiles, conformers=4, optimizer="mmff", elements=None, seed=0, skips=None):
        super().__init__(name, size)
        self.conformers = int(conformers)
        self.optimizer = optimizer
        self.seed = int(seed)
        self.skips = skips if skips is not None else SkipLog()
        self.entries: list[mol.MoleculeEntry] = []
        out_of_range = 0
        for entry in smiles:
            try:
                n = mol.count_atoms(entry.smiles)
                els = mol.smiles_elements(entry.smiles)
            except mol.SmilesError as err:
                self.skips.skip(f"SMILES '{entry.smiles}'", str(err))
                continue
            if elements is not None and not els <= elements:
                continue
            if not size.contains(n):
                out_of_range += 1
                continue
            self.entries.append(entry)
        if not self.entries:
            raise ConfigError(f"generation.sources.{name}: no molecule fits {size.min}-{size.max} atoms and "
                              "generation.elements; widen the size bounds or add SMILES")

    # Embeddings are deterministic in (smiles, conformers, seed, optimizer), so sources built
    # for different mix entries of one run share them (and the same conformer is one group).
    _cache: dict = {}

    @property
    def n_candidates(self) -> int:
        return len(self.entries)

    def conformers_of(self, smiles: str) -> list[Atoms] | None:
        key = (smiles, self.conformers, self.seed, self.optimizer)
        if key not in self._cache:
            if len(self._cache) > 4096:
                self._cache.clear()
            try:
                self._cache[key] = mol.embed_smiles(smiles, self.conformers, mol.stable_seed(smiles, self.seed),
                                                    self.optimizer)
            except mol.SmilesError as err:
                self._cache[key] = str(err)
        confs = self._cache[key]
        if isinstance(confs, str):  # embedding failed: report (once per run) and skip
            self.skips.skip(f"SMILES '{smiles}'", confs)
            return None
        return [a.copy() for a in confs]

    def make_root(self, index, rng):
        i, rnd = self._pick(index, len(self.entries))
        entry = self.entries[i]
        confs = self.conformers_of(entry.smiles)
        if not confs:
            return None
        k = rnd % len(confs)
        atoms = confs[k].copy()
        atoms.info["smiles"] = entry.smiles  # for samplers that rebuild the molecule (normal_modes, hessian: mmff)
        return Root(atoms, f"smiles:{entry.smiles}", f"smiles:{entry.smiles}/conf{k}")


class BulkSource(Source):
    """Bulk crystals from prototypes, as supercells sized to a target atom count."""

    kind = "bulk"

    def __init__(self, name, size, crystals, elements=None, vacancies=0):
        super().__init__(name, size)
        # vacancies: an integer or [min, max]; each root loses that many random atoms (point
        # defects), drawn uniformly in the range. The provenance says how many.
        v = [vacancies, vacancies] if isinstance(vacancies, int) and not isinstance(vacancies, bool) else vacancies
        if (not isinstance(v, (list, tuple)) or len(v) != 2
                or any(isinstance(x, bool) or not isinstance(x, int) or x < 0 for x in v) or v[0] > v[1]):
            raise ConfigError(
                f"generation.sources.{name}.vacancies: give an integer >= 0 or [min, max], got {vacancies!r}"
            )
        self.vacancies = (int(v[0]), int(v[1]))
        where = f"generation.sources.{name}.crystals"
        self.items = []
        for label, spec in _resolve_crystals(crystals, elements, where):
            cell = build_crystal(spec, f"{where}: {label}")
            if len(cell) <= size.max:
                self.items.append((label, cell))
        if not self.items:
            raise ConfigError(f"generation.sources.{name}: every unit cell has more than {size.max} atoms; "
                              "raise generation.size.max")

    @property
    def n_candidates(self) -> int:
        return len(self.items)

    def make_root(self, index, rng):
        label, cell = self.items[self._pick(index, len(self.items))[0]]
        reps = supercell_repeats(cell, self.size.draw(rng), self.size.min, self.size.max)
        if reps is None:
            return None
        tag = "x".join(map(str, reps))
        atoms = cell.repeat(reps)
        n_vac = int(rng.integers(self.vacancies[0], self.vacancies[1] + 1)) if self.vacancies[1] else 0
        n_vac = min(n_vac, len(atoms) - max(self.size.min, 1))
        if n_vac > 0:
            del atoms[sorted(rng.choice(len(atoms), size=n_vac, replace=False).tolist())]
            return Root(atoms, f"bulk:{label}", f"bulk:{label}/{tag}/vac{n_vac}")
        return Root(atoms, f"bulk:{label}", f"bulk:{label}/{tag}")


class AlloySource(Source):
    """Random substitutional alloys on an fcc/bcc/hcp lattice; composition ~ Dirichlet(1) per root.

    The lattice constant follows Vegard's law over the elements' own constants unless ``a`` is given.
    """

    kind = "alloy"

    def __init__(self, name, size, elements_list, structure="fcc", a=None, allowed=None):
        super().__init__(name, size)
        where = f"generation.sources.{name}"
        self._checked(elements=elements_list, structure=structure, a=a)
        for sym in elements_list:
            check_symbol(sym, f"{where}.elements")
            if allowed is not None and sym not in allowed:
                raise ConfigError(f"{where}.elements: {sym} is not in generation.elements; add it there or drop it")
        self.symbols = list(elements_list)
        self.structure = structure
        self.a = float(a) if a is not None else None
        self.a_each = []
        if self.a is None:
            for sym in self.symbols:
                ref = _reference_a(sym, structure, where)
                if ref is None:
                    raise ConfigError(f"{where}.a: no {structure} lattice constant known for {sym}; give 'a' in A")
                self.a_each.append(ref)

    def make_root(self, index, rng):
        x = rng.dirichlet(np.ones(len(self.symbols)))
        a = self.a if self.a is not None else float(np.dot(x, self.a_each))
        cell = build_crystal({"formula": self.symbols[0], "structure": self.structure, "a": a})
        reps = supercell_repeats(cell, self.size.draw(rng), self.size.min, self.size.max)
        if reps is None:
            return None
        atoms = cell.repeat(reps)
        n = len(atoms)
        counts = np.floor(x * n).astype(int)
        counts[np.argsort(-(x * n - counts))[: n - counts.sum()]] += 1
        species = np.repeat([atomic_numbers[s] for s in self.symbols], counts)
        atoms.numbers = rng.permutation(species)
        label = "".join(self.symbols) + f"-{self.structure}"
        return Root(atoms, f"alloy:{label}", f"alloy:{label}/{index}")


class FileSource(Source):
    """Structures read by ASE from user files (CIF, extxyz, POSCAR, ...); periodic ones are made into
    supercells sized to a target atom count when ``supercell`` is true."""

    kind = "file"

    def __init__(self, name, size, paths, supercell=True, allowed=None, base_dir=None):
        super().__init__(name, size)
        import ase.io

        where = f"generation.sources.{name}.paths"
        if isinstance(paths, str):
            paths = [paths]
        if not isinstance(paths, list) or not paths:
            raise ConfigError(f"{where}: give a list of structure files")
        self.supercell = bool(supercell)
        self.items = []
        for p in paths:
            path = Path(p)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not path.is_file():
                raise ConfigError(f"{where}: structure file '{p}' not found; check the path")
            try:
                frames = ase.io.read(path, index=":")
            except Exception as err:  # ASE raises many types for a malformed file
                msg = " ".join(str(err).split())[:120] or err.__class__.__name__
                raise ConfigError(f"cannot read structure file '{p}': {msg}; check that it is a valid "
                                  "CIF/extxyz/POSCAR file") from None
            if not frames:
                raise ConfigError(f"structure file '{p}' holds no structures")
            for k, atoms in enumerate(frames):
                syms = set(atoms.get_chemical_symbols())
                if allowed is not None and not syms <= allowed:
                    raise ConfigError(f"{where}: '{p}' frame {k} contains {sorted(syms - allowed)[0]}, which is "
                                      "not in generation.elements")
                bare = Atoms(numbers=atoms.numbers, positions=atoms.positions, cell=atoms.cell, pbc=atoms.pbc)
                self.items.append((f"{os.path.basename(str(p))}" + (f"#{k}" if len(frames) > 1 else ""), bare))

    @property
    def n_candidates(self) -> int:
        return len(self.items)

    def make_root(self, index, rng):
        label, atoms = self.items[self._pick(index, len(self.items))[0]]
        if self.supercell and atoms.pbc.all():
            reps = supercell_repeats(atoms, self.size.draw(rng), self.size.min, self.size.max)
            if reps is None:
                return None
            tag = "x".join(map(str, reps))
            return Root(atoms.repeat(reps), f"file:{label}", f"file:{label}/{tag}")
        if not self.size.contains(len(atoms)):
            return None
        return Root(atoms.copy(), f"file:{label}", f"file:{label}")


class SurfaceSource(Source):
    """Slabs cut from the crystal list along Miller planes, with vacuum (A) on both sides.

    The slab cell is periodic in all three directions (vacuum separates the images), which every
    teacher accepts; layers are drawn from ``layers`` and the slab is repeated in-plane to a target size.
    """

    kind = "surface"

    def __init__(self, name, size, crystals, miller=((1, 0, 0), (1, 1, 0), (1, 1, 1)), layers=(2, 5), vacuum=6.0,
                 elements=None):
        super().__init__(name, size)
        where = f"generation.sources.{name}"
        self._checked(miller=[list(m) for m in miller], layers=layers if isinstance(layers, int) else list(layers),
                      vacuum=vacuum)
        self.cells = [(label, build_crystal(spec, f"{where}.crystals: {label}"))
                      for label, spec in _resolve_crystals(crystals, elements, f"{where}.crystals")]
        try:
            self.miller = [tuple(int(i) for i in m) for m in miller]
            assert all(len(m) == 3 and any(m) for m in self.miller)
        except (TypeError, ValueError, AssertionError):
            raise ConfigError(
                f"{where}.miller: give a list of three-integer Miller indices such as [1, 1, 1]"
            ) from None
        try:
            lo, hi = (int(layers), int(layers)) if isinstance(layers, int) else (int(layers[0]), int(layers[1]))
        except (TypeError, ValueError, IndexError):
            raise ConfigError(f"{where}.layers: give an integer or [min, max]") from None
        if not 1 <= lo <= hi:
            raise ConfigError(f"{where}.layers: need 1 <= min <= max, got {layers}")
        self.layers = (lo, hi)
        self.vacuum = float(vacuum)

    @property
    def n_candidates(self) -> int:
        return len(self.cells) * len(self.miller)

    def make_root(self, index, rng):
        from ase.build import surface

        k, _ = self._pick(index, len(self.cells) * len(self.miller))
        label, cell = self.cells[k % len(self.cells)]
        miller = self.miller[k // len(self.cells)]
        n_layers = int(rng.integers(self.layers[0], self.layers[1] + 1))
        slab = surface(cell, miller, n_layers, vacuum=self.vacuum, periodic=False)
        slab.pbc = (True, True, False)
        reps = supercell_repeats(slab, self.size.draw(rng), self.size.min, self.size.max)
        if reps is None:
            return None
        slab = slab.repeat(reps)
        slab.pbc = True
        if not respects_min_distance(slab):  # some cuts of compounds leave overlapping atoms
            return None
        hkl = "".join(map(str, miller))
        return Root(slab, f"surface:{label}({hkl})", f"surface:{label}({hkl})/{n_layers}L/{'x'.join(map(str, reps))}")


CLUSTER_SHAPES = ("icosahedron", "decahedron", "octahedron")


@functools.lru_cache(maxsize=None)
def _cluster_sizes(shape: str) -> tuple:
    """All (shape parameters, atom count) pairs considered for a cluster shape (built once)."""
    from ase.cluster import Decahedron, Octahedron

    rows = []
    if shape == "icosahedron":
        for k in range(1, 9):
            rows.append(((k,), (10 * k**3 - 15 * k**2 + 11 * k - 3) // 3))
    elif shape == "decahedron":
        for p in range(1, 7):
            for q in range(1, 5):
                for r in range(0, 3):
                    rows.append(((p, q, r), len(Decahedron("Cu", p, q, r))))
    else:
        for length in range(2, 11):
            for cut in range(0, (length - 1) // 2 + 1):
                rows.append(((length, cut), len(Octahedron("Cu", length, cut))))
    return tuple(rows)


class ClusterSource(Source):
    """Nanoclusters from :mod:`ase.cluster` (icosahedra, Marks decahedra, truncated octahedra), no cell."""

    kind = "cluster"

    def __init__(self, name, size, elements_list, shapes=CLUSTER_SHAPES, vacuum=None, allowed=None):
        super().__init__(name, size)
        where = f"generation.sources.{name}"
        self._checked(elements=elements_list, shapes=list(shapes))
        self.symbols = []
        for sym in elements_list:
            check_symbol(sym, f"{where}.elements")
            if allowed is not None and sym not in allowed:
                raise ConfigError(f"{where}.elements: {sym} is not in generation.elements")
            if _reference_a(sym, "fcc", where) is None:
                raise ConfigError(f"{where}.elements: no fcc lattice constant known for {sym}; "
                                  "clusters are built for fcc metals (Cu, Ag, Au, Pt, Pd, Ni, Al, ...)")
            self.symbols.append(sym)
        self.shapes = list(shapes)
        self._tables: dict = {}
        if not any(self._table(s) for s in self.shapes):
            raise ConfigError(f"{where}: no {'/'.join(self.shapes)} cluster has between {size.min} and {size.max} "
                              "atoms; widen the size bounds (icosahedra have 13, 55, 147, 309 atoms)")

    def _table(self, shape):
        """(params, n_atoms) of each cluster of this shape within the size range."""
        if shape not in self._tables:
            self._tables[shape] = [row for row in _cluster_sizes(shape) if self.size.contains(row[1])]
        return self._tables[shape]

    def make_root(self, index, rng):
        from ase.cluster import Decahedron, Icosahedron, Octahedron

        sym = self.symbols[index % len(self.symbols)]
        shapes = [s for s in self.shapes if self._table(s)]
        if not shapes:
            raise ConfigError(f"generation.sources.{self.name}: no cluster shape has between {self.size.min} and "
                              f"{self.size.max} atoms; widen generation.size")
        shape = shapes[(index // len(self.symbols)) % len(shapes)]
        target = self.size.draw(rng)
        rows = self._table(shape)
        best = min(abs(math.log(n / target)) for _, n in rows)
        near = [row for row in rows if abs(math.log(row[1] / target)) <= best + 0.05]
        params, _ = near[int(rng.integers(len(near)))]
        a = _reference_a(sym, "fcc", "")
        if shape == "icosahedron":
            atoms = Icosahedron(sym, params[0], latticeconstant=a)
        elif shape == "decahedron":
            atoms = Decahedron(sym, *params, latticeconstant=a)
        else:
            atoms = Octahedron(sym, *params, latticeconstant=a)
        atoms = Atoms(numbers=atoms.numbers, positions=atoms.positions - atoms.positions.mean(axis=0), pbc=False)
        tag = f"{shape}{'-'.join(map(str, params))}"
        return Root(atoms, f"cluster:{sym}-{shape}", f"cluster:{sym}-{tag}")


class LiquidSource(Source):
    """Molecular liquids and solvated boxes: random insertion at a target density (g/cm^3).

    A solute (if any) goes in first; solvent molecules are inserted with random orientation
    and position until the box holds the target atom count. Every intermolecular distance,
    periodic images included, is at least ``tolerance`` A; a root whose packing fails after
    ``max_attempts`` insertions per molecule is skipped.
    """

    kind = "liquid"

    def __init__(self, name, size, solvent, solutes=(), density=1.0, tolerance=1.6, max_attempts=640,
                 elements=None, seed=0, skips=None, vacuum=0.0):
        super().__init__(name, size)
        where = f"generation.sources.{name}"
        # vacuum > 0: the packed box becomes a liquid slab, its c axis lengthened by ``vacuum`` A
        # (two liquid/vacuum interfaces, still periodic in all three directions).
        self._checked(solvent=solvent, solutes=list(solutes), density=density, tolerance=tolerance,
                      max_attempts=max_attempts, vacuum=vacuum)
        self.vacuum = float(vacuum)
        self.density, self.tolerance, self.max_attempts = float(density), float(tolerance), int(max_attempts)
        self.seed = int(seed)
        self.skips = skips if skips is not None else SkipLog()
        try:
            self.solvent = mol.embed_smiles(str(solvent), 1, mol.stable_seed(str(solvent), seed))[0]
        except mol.SmilesError as err:
            raise ConfigError(f"{where}.solvent: {err}") from None
        self.solvent_smiles = str(solvent)
        self.solutes = []
        for smi in solutes or ():
            try:
                self.solutes.append((smi, mol.embed_smiles(smi, 1, mol.stable_seed(smi, seed))[0]))
            except mol.SmilesError as err:
                self.skips.skip(f"SMILES '{smi}'", str(err))
        for smi, atoms in [(self.solvent_smiles, self.solvent)] + self.solutes:
            if elements is not None and not set(atoms.get_chemical_symbols()) <= elements:
                raise ConfigError(f"{where}: '{smi}' has elements outside generation.elements")
        if len(self.solvent) > size.max:
            raise ConfigError(f"{where}.solvent: one molecule has more than generation.size.max atoms")

    def make_root(self, index, rng):
        solute_smiles, solute = (None, None)
        if self.solutes:
            solute_smiles, solute = self.solutes[index % len(self.solutes)]
        n_solute = len(solute) if solute is not None else 0
        target = self.size.draw(rng)
        n_solv = max(1 if solute is None else 0, round((target - n_solute) / len(self.solvent)))
        while n_solute + n_solv * len(self.solvent) > self.size.max and n_solv > 0:
            n_solv -= 1
        while n_solute + n_solv * len(self.solvent) < self.size.min:
            n_solv += 1
        # the box must hold the largest molecule plus a solvation shell, away from its own image
        biggest = max(_extent(t) for t in ([solute] if solute is not None else []) + [self.solvent])
        while True:
            templates = ([solute] if solute is not None else []) + [self.solvent] * n_solv
            mass = sum(atomic_masses[t.numbers].sum() for t in templates)
            length = (mass * 1.66053906660 / self.density) ** (1.0 / 3.0)  # amu / (g/cm^3) -> A^3
            if length >= biggest + self.tolerance + 2.0 or solute is None:
                break
            n_solv += 1
        if n_solute + n_solv * len(self.solvent) > self.size.max:
            return None
        atoms = pack_molecules(templates, length, self.tolerance, rng, self.max_attempts,
                               center_first=solute is not None)
        if atoms is None:
            return None
        label = self.solvent_smiles + (f"+{solute_smiles}" if solute_smiles else "")
        if self.vacuum > 0:
            # make every molecule whole along z (the packing wrapped atoms into the cube), so that
            # the vacuum layer cuts no molecule in two
            start = 0
            for t in templates:
                z = atoms.positions[start:start + len(t), 2]
                dz = z - z[0]
                z -= length * np.round(dz / length)
                atoms.positions[start:start + len(t), 2] = z
                start += len(t)
            cell = atoms.cell.array.copy()
            cell[2, 2] += self.vacuum
            atoms.set_cell(cell, scale_atoms=False)
            atoms.positions[:, 2] += 0.5 * self.vacuum
            label += "/slab"
        return Root(atoms, f"liquid:{label}", f"liquid:{label}/{index}")


def _extent(atoms: Atoms) -> float:
    """Diameter (A) of the sphere around the centroid that holds every atom."""
    local = atoms.positions - atoms.positions.mean(axis=0)
    return 2.0 * float(np.linalg.norm(local, axis=1).max()) if len(atoms) > 1 else 0.0


def pack_molecules(templates: list[Atoms], length: float, tolerance: float, rng: np.random.Generator,
                   max_attempts: int = 640, center_first: bool = False) -> Atoms | None:
    """Insert rigid molecules one by one into a periodic cube of side ``length`` A.

    Candidate placements (random orientation; centre on a free site of a jittered cubic grid
    with one site per molecule, or uniformly random) are tested in vectorised batches; of
    those whose minimum-image distances to every atom already placed are >= ``tolerance`` A,
    the one farthest from its neighbours is taken, which leaves room for the molecules still
    to come. Returns ``None`` if a molecule finds no place in ``max_attempts`` candidates.
    """
    n_grid = max(1, math.ceil(len(templates) ** (1.0 / 3.0)))
    spacing = length / n_grid
    grid = (np.stack(np.meshgrid(*[np.arange(n_grid)] * 3, indexing="ij"), -1).reshape(-1, 3) + 0.5) * spacing
    free = list(rng.permutation(len(grid)))
    placed_pos = np.zeros((0, 3))
    numbers = []
    batch = 32  # candidate placements tested at once
    for k, tmpl in enumerate(templates):
        local = tmpl.positions - tmpl.positions.mean(axis=0)
        extent = np.linalg.norm(local, axis=1).max() * 2 if len(local) > 1 else 0.0
        if extent + tolerance > length:
            return None  # the molecule would touch its own image
        placed = False
        for _start in range(0, max_attempts, batch):
            rots = random_rotations(rng, batch)
            if center_first and k == 0:
                centers = np.full((batch, 3), length / 2)
                site_of = np.full(batch, -1)
            else:
                n_sites = min(len(free), batch // 2)
                site_of = np.full(batch, -1)
                if n_sites:
                    pick = rng.choice(len(free), n_sites, replace=False)
                    site_of[:n_sites] = pick
                centers = rng.uniform(0, length, (batch, 3))
                if n_sites:
                    centers[:n_sites] = grid[[free[p] for p in pick]] + rng.uniform(-0.15, 0.15, (n_sites, 3)) * spacing
            trials = np.einsum("aj,bij->bai", local, rots) + centers[:, None, :]
            if len(placed_pos):
                d = trials[:, :, None, :] - placed_pos[None, None, :, :]
                d -= length * np.round(d / length)
                closest = np.einsum("bijk,bijk->bij", d, d).min(axis=(1, 2))
            else:
                closest = np.full(batch, np.inf)
            best = int(np.argmax(closest))
            if closest[best] >= tolerance**2:
                placed_pos = np.vstack([placed_pos, trials[best]])
                numbers.extend(tmpl.numbers.tolist())
                if site_of[best] >= 0:
                    free.pop(int(site_of[best]))
                placed = True
                break
        if not placed:
            return None
    atoms = Atoms(numbers=numbers, positions=placed_pos, cell=[length] * 3, pbc=True)
    atoms.wrap()
    return atoms


def element_set(value, where="generation.elements") -> set[str] | None:
    """Validated element list -> set of symbols (``None`` means any element)."""
    if value is None or value == "any":
        return None
    if not isinstance(value, list) or not value:
        raise ConfigError(f"{where}: give a list of element symbols or 'any'")
    for s in value:
        check_symbol(s, where)
    return set(value)

