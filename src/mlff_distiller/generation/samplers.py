"""Samplers: how a root structure is perturbed and explored.

Each sampler takes a root ``Atoms``, a ``numpy.random.Generator``, its parameters and (when
it needs energies or forces) an ASE calculator, and returns a list of :class:`Sample`. A
sample's ``parent`` is the index of the sample it was derived from in the same list, or
``-1`` for the root. The generator turns these into file indices for the provenance.

Units: A (displacements, stdev), K (temperatures), fs (time step), 1/fs (Langevin friction),
eV/A (force thresholds). Parameters are validated by :func:`validate_params`.

| sampler | needs a calculator | what it does |
|---|---|---|
| ``none`` | no | the root as built |
| ``rattle`` | no | Gaussian displacements + random cell strain, minimum-distance rejection |
| ``normal_modes`` | yes | relax, finite-difference Hessian, Boltzmann displacements along the modes at T |
| ``md`` | yes | Langevin MD at one of several T, decorrelated snapshots |
| ``rattle_relax`` | yes | trees of rattle -> short relaxation -> rattle ... |
| ``high_energy`` | ``compress_md`` only | bond stretching, compression, hot compressed MD |
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Annotated, Any, Literal, get_args

import numpy as np
from ase import Atoms, units
from pydantic import BeforeValidator, Field

from ..errors import ConfigError
from ..settings import Bool, Float, Int, as_list, build, copied_default, field_names, limits, section
from .geometry import DEFAULT_MIN_DISTANCE_FACTOR, clean_copy, respects_min_distance


@dataclass
class Sample:
    atoms: Atoms
    parent: int  # index in the returned list, -1 = the root
    params: dict


# defaults per sampler; every key a recipe may set. per_root = samples taken from one root.
SAMPLER_DEFAULTS: dict[str, dict] = {
    "none": {"per_root": 1},
    "rattle": {"per_root": 4, "stdev": [0.02, 0.12], "strain": 0.03, "max_tries": 20},
    "normal_modes": {"per_root": 8, "temperatures": [300.0], "relax_steps": 100, "fmax": 0.05, "delta": 0.01,
                     "max_tries": 20, "hessian": "teacher"},
    "md": {"per_root": 5, "temperatures": [300.0, 600.0], "timestep": 0.5, "friction": 0.02, "equil_steps": 50,
           "interval": 20, "relax_steps": 0},
    "rattle_relax": {"per_root": 6, "stdev": [0.05, 0.15], "relax_steps": 5, "fmax": 0.02, "branching": 2,
                     "keep_rattled": False, "max_tries": 20},
    "high_energy": {"per_root": 4, "methods": ["stretch", "compress"], "stretch": [1.3, 1.8],
                    "compress": [0.82, 0.94], "temperature": 2000.0, "md_steps": 40, "timestep": 0.5,
                    "stdev": [0.0, 0.05], "max_tries": 20},
}
SAMPLERS = tuple(SAMPLER_DEFAULTS)
HIGH_ENERGY_METHODS = ("stretch", "compress", "compress_md")
#: where normal_modes takes its Hessian: the teacher (6N force calls), or RDKit's MMFF94 force
#: field for molecules built from SMILES (no teacher call; the samples are labelled later)
HESSIAN_SOURCES = ("teacher", "mmff")


def needs_calculator(sampler: str, params: dict) -> bool:
    if sampler == "normal_modes":
        return params.get("hessian", "teacher") == "teacher"
    if sampler in ("md", "rattle_relax"):
        return True
    if sampler == "high_energy":
        return "compress_md" in params.get("methods", ())
    return False


def _range(value: Any) -> list[float]:
    """``[min, max]`` from a number (min = max) or a two-item list of numbers; ``ValueError``
    unless ``0 <= min <= max`` (finite). A stdev in A, a stretch or compress factor."""
    if isinstance(value, bool) or (isinstance(value, (list, tuple)) and any(isinstance(v, bool) for v in value)):
        raise ValueError("not a number")
    if isinstance(value, (list, tuple)):
        if len(value) != 2:
            raise ValueError("not [min, max]")
        lo, hi = float(value[0]), float(value[1])
    else:
        try:
            lo = hi = float(value)
        except TypeError:
            raise ValueError("not a number") from None
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo > hi or lo < 0:
        raise ValueError("need 0 <= min <= max")
    return [lo, hi]


def _default(sampler: str, key: str) -> Any:
    """The field default of a sampler's ``key``: its value in :data:`SAMPLER_DEFAULTS` (the owner)."""
    value = SAMPLER_DEFAULTS[sampler][key]
    return copied_default(value)


_SPAN = "a number >= 0 or [min, max] with 0 <= min <= max"
#: a stdev (A) drawn uniformly in [min, max]; one number = a fixed one
_Stdev = Annotated[list[float], BeforeValidator(_range), limits(allowed=f"{_SPAN} (A)")]
#: a scale factor drawn uniformly in [min, max]
_Factor = Annotated[list[float], BeforeValidator(_range), limits(allowed=f"{_SPAN} (scale factor)")]
_Temperatures = Annotated[list[Annotated[Float, Field(gt=0, allow_inf_nan=False)]], BeforeValidator(as_list),
                          limits(min_length=1, allowed="a temperature > 0 K or a non-empty list of them")]
HighEnergyMethod = Literal["stretch", "compress", "compress_md"]
HessianSource = Literal["teacher", "mmff"]
_Methods = Annotated[list[HighEnergyMethod], BeforeValidator(as_list), limits(
    min_length=1, allowed=f"one of {', '.join(HIGH_ENERGY_METHODS)} or a non-empty list of them")]
_Count = Annotated[Int, limits(ge=1)]
_PerRoot = Annotated[Int, limits(ge=1, note="samples taken from one root")]
_Steps = Annotated[Int, limits(ge=0, note="0 = none")]
_Tries = Annotated[Int, limits(ge=1, note="draws before a sample is given up")]
_Fmax = Annotated[Float, limits(ge=0, allow_inf_nan=False, unit="eV/A")]
_Timestep = Annotated[Float, limits(gt=0, allow_inf_nan=False, unit="fs")]


@section("params")
class CommonParams:
    """The keys every sampler accepts besides its own (handled by the generator): keep the root
    itself, and a closest-pair threshold of its own (a fraction of the covalent-radius sum)."""

    include_root: Bool | None = None
    min_distance_factor: Annotated[Float | None, limits(
        ge=0, lt=2, allow_inf_nan=False, note="fraction of the covalent-radius sum")] = None


@section("params")
class NoneParams(CommonParams):
    """``none``: the root as built."""

    per_root: _PerRoot = _default("none", "per_root")


@section("params")
class RattleParams(CommonParams):
    """``rattle``: Gaussian displacements of ``stdev`` A plus a cell strain up to ``strain``."""

    per_root: _PerRoot = _default("rattle", "per_root")
    stdev: _Stdev = _default("rattle", "stdev")
    strain: Annotated[Float, limits(ge=0, allow_inf_nan=False, note="largest strain component")] = (
        _default("rattle", "strain"))
    max_tries: _Tries = _default("rattle", "max_tries")


@section("params")
class NormalModesParams(CommonParams):
    """``normal_modes``: Boltzmann displacements along the normal modes at ``temperatures`` K."""

    per_root: _PerRoot = _default("normal_modes", "per_root")
    temperatures: _Temperatures = _default("normal_modes", "temperatures")
    relax_steps: _Steps = _default("normal_modes", "relax_steps")
    fmax: _Fmax = _default("normal_modes", "fmax")
    delta: Annotated[Float, limits(gt=0, allow_inf_nan=False, unit="A", note="finite-difference step")] = (
        _default("normal_modes", "delta"))
    max_tries: _Tries = _default("normal_modes", "max_tries")
    hessian: HessianSource = _default("normal_modes", "hessian")


@section("params")
class MdParams(CommonParams):
    """``md``: Langevin MD at one of ``temperatures`` K, a snapshot every ``interval`` steps."""

    per_root: _PerRoot = _default("md", "per_root")
    temperatures: _Temperatures = _default("md", "temperatures")
    timestep: _Timestep = _default("md", "timestep")
    friction: Annotated[Float, limits(ge=0, allow_inf_nan=False, unit="1/fs")] = _default("md", "friction")
    equil_steps: _Steps = _default("md", "equil_steps")
    interval: Annotated[Int, limits(ge=1, note="MD steps between snapshots")] = _default("md", "interval")
    relax_steps: Annotated[Int, limits(ge=0, note="0 = start MD from the root as built")] = _default(
        "md", "relax_steps")


@section("params")
class RattleRelaxParams(CommonParams):
    """``rattle_relax``: trees of rattle -> short relaxation -> rattle, ``branching`` per node."""

    per_root: _PerRoot = _default("rattle_relax", "per_root")
    stdev: _Stdev = _default("rattle_relax", "stdev")
    relax_steps: _Steps = _default("rattle_relax", "relax_steps")
    fmax: _Fmax = _default("rattle_relax", "fmax")
    branching: _Count = _default("rattle_relax", "branching")
    keep_rattled: Bool = _default("rattle_relax", "keep_rattled")
    max_tries: _Tries = _default("rattle_relax", "max_tries")


@section("params")
class HighEnergyParams(CommonParams):
    """``high_energy``: bond stretching, compression, hot compressed MD at ``temperature`` K."""

    per_root: _PerRoot = _default("high_energy", "per_root")
    methods: _Methods = _default("high_energy", "methods")
    stretch: _Factor = _default("high_energy", "stretch")
    compress: _Factor = _default("high_energy", "compress")
    temperature: Annotated[Float, limits(ge=0, allow_inf_nan=False, unit="K")] = _default("high_energy", "temperature")
    md_steps: _Count = _default("high_energy", "md_steps")
    timestep: _Timestep = _default("high_energy", "timestep")
    stdev: _Stdev = _default("high_energy", "stdev")
    max_tries: _Tries = _default("high_energy", "max_tries")


#: the section of each sampler's ``params``
PARAM_SECTIONS: dict[str, type] = {
    "none": NoneParams, "rattle": RattleParams, "normal_modes": NormalModesParams, "md": MdParams,
    "rattle_relax": RattleRelaxParams, "high_energy": HighEnergyParams,
}
#: keys every sampler accepts in a recipe besides its own (handled by the generator)
COMMON_KEYS = tuple(field_names(CommonParams))
if (tuple(PARAM_SECTIONS) != SAMPLERS
        or any(field_names(c) != [*COMMON_KEYS, *SAMPLER_DEFAULTS[s]] for s, c in PARAM_SECTIONS.items())
        or get_args(HighEnergyMethod) != HIGH_ENERGY_METHODS or get_args(HessianSource) != HESSIAN_SOURCES):
    raise ImportError("generation.samplers: a params section differs from SAMPLER_DEFAULTS")  # pragma: no cover


def validate_params(sampler: str, params: dict | None, where: str) -> dict:
    """``params`` of ``sampler`` checked by its section (:data:`PARAM_SECTIONS`), the defaults
    filled in: the sampler's keys in :data:`SAMPLER_DEFAULTS` order, then the common keys given.
    Ranges (``stdev``, ``stretch``, ``compress``) and ``temperatures`` come out as lists of
    floats, the other numbers as floats; a ``min_distance_factor`` keeps the type given.
    ``ConfigError`` (one line) names ``where.params.key`` and the allowed values."""
    if sampler not in SAMPLER_DEFAULTS:
        raise ConfigError(f"{where}.sampler: '{sampler}' unknown; allowed: {', '.join(SAMPLERS)}")
    checked: Any = build(PARAM_SECTIONS[sampler], params, where=f"{where}.params")
    given = params or {}
    keys = [*SAMPLER_DEFAULTS[sampler], *(k for k in given if k in COMMON_KEYS)]
    out = {k: getattr(checked, k) for k in keys}
    if isinstance(given.get("min_distance_factor"), int):  # 1 stays 1 (not 1.0), as before
        out["min_distance_factor"] = given["min_distance_factor"]
    return out


# ----------------------------------------------------------------------------------------- helpers
def random_strain(atoms: Atoms, max_strain: float, rng: np.random.Generator) -> Atoms:
    """Apply a random symmetric strain (entries uniform in +-max_strain) to a periodic cell."""
    out = atoms.copy()
    if max_strain > 0 and atoms.pbc.all():
        eps = rng.uniform(-max_strain, max_strain, (3, 3))
        eps = 0.5 * (eps + eps.T)
        out.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return out


def rattle_once(atoms: Atoms, stdev: float, strain: float, rng, factor: float, max_tries: int) -> Atoms | None:
    """Gaussian displacements (``stdev`` A per component) + strain; ``None`` if every try is too close."""
    for _ in range(max_tries):
        out = random_strain(atoms, strain, rng)
        out.positions = out.positions + rng.normal(0.0, stdev, out.positions.shape)
        if respects_min_distance(out, factor):
            return out
    return None


def _relax(atoms: Atoms, calc, steps: int, fmax: float) -> Atoms:
    from ase.optimize import BFGS

    work = clean_copy(atoms)
    work.calc = calc
    if steps > 0:
        BFGS(work, logfile=None).run(fmax=fmax, steps=steps)
    out = clean_copy(work)
    work.calc = None
    return out


# ----------------------------------------------------------------------------------------- samplers
def sample_none(root, rng, params, calc=None):
    return [Sample(clean_copy(root), -1, {})]


def sample_rattle(root, rng, params, calc=None):
    """Gaussian rattle with a stdev drawn in ``params['stdev']`` plus a random cell strain."""
    factor = params.get("min_distance_factor", DEFAULT_MIN_DISTANCE_FACTOR)
    out = []
    for _ in range(params["per_root"]):
        stdev = float(rng.uniform(*params["stdev"]))
        atoms = rattle_once(root, stdev, params["strain"], rng, factor, params["max_tries"])
        if atoms is not None:
            strain = params["strain"] if root.pbc.all() else 0.0  # only 3-D periodic cells are strained
            out.append(Sample(clean_copy(atoms), -1, {"stdev": round(stdev, 6), "strain": strain}))
    return out


def finite_difference_hessian(atoms: Atoms, calc, delta: float = 0.01) -> np.ndarray:
    """Hessian (3N, 3N) in eV/A^2 from central differences of the forces (6N force calls), symmetrised."""
    work = clean_copy(atoms)
    work.calc = calc
    x0 = work.positions.copy()
    n = len(work)
    hess = np.zeros((3 * n, 3 * n))
    for i in range(n):
        for a in range(3):
            cols = []
            for sign in (1.0, -1.0):
                x = x0.copy()
                x[i, a] += sign * delta
                work.positions = x
                cols.append(work.get_forces().reshape(-1))
            hess[:, 3 * i + a] = -(cols[0] - cols[1]) / (2 * delta)
    work.calc = None
    return 0.5 * (hess + hess.T)


def vibrational_modes(atoms: Atoms, hessian: np.ndarray):
    """Mass-weighted normal modes without the rigid-body ones.

    Returns ``(eigenvalues (eV/(A^2 amu)), vectors (3N, M))`` for the M positive modes after
    dropping 3 (periodic), 5 (linear) or 6 (other) modes of smallest magnitude; imaginary
    (negative) modes are dropped too.
    """
    masses = np.repeat(atoms.get_masses(), 3)
    mw = hessian / np.sqrt(np.outer(masses, masses))
    vals, vecs = np.linalg.eigh(mw)
    n = len(atoms)
    if atoms.pbc.any():
        n_rigid = 3
    elif n == 1:
        n_rigid = 3
    else:
        inertia = atoms.get_moments_of_inertia()  # principal moments, amu A^2
        n_rigid = 5 if inertia.min() < 1e-3 * max(inertia.max(), 1e-12) else 6
    order = np.argsort(np.abs(vals))
    keep = np.sort(order[n_rigid:])
    keep = keep[vals[keep] > 1e-8]
    return vals[keep], vecs[:, keep]


def mmff_calculator(atoms: Atoms):
    """An ASE calculator of RDKit's MMFF94 (UFF where MMFF lacks parameters) for a molecule from SMILES.

    ``atoms.info["smiles"]`` names the molecule; the atoms must be in RDKit's order for that
    SMILES with explicit hydrogens (as :func:`~.molecules.embed_smiles` builds them). Energies in
    eV, forces in eV/A (RDKit works in kcal/mol and Angstrom).
    """
    from ase.calculators.calculator import Calculator, all_changes
    from rdkit import Chem
    from rdkit.Chem import AllChem
    from rdkit.Geometry import Point3D

    from .molecules import parse_smiles

    smiles = atoms.info.get("smiles")
    if not smiles or atoms.pbc.any():
        raise ConfigError("normal_modes hessian: mmff needs molecules built from SMILES (a molecules source); "
                          "use hessian: teacher for other structures")
    mol = parse_smiles(smiles)
    if [a.GetAtomicNum() for a in mol.GetAtoms()] != [int(z) for z in atoms.numbers]:
        raise ConfigError(f"normal_modes hessian: mmff: the atoms are not in RDKit's order for SMILES '{smiles}'")
    conf = Chem.Conformer(len(atoms))  # the force field needs a conformer; energies take explicit positions
    for i, (x, y, z) in enumerate(atoms.positions):
        conf.SetAtomPosition(i, Point3D(float(x), float(y), float(z)))
    mol.AddConformer(conf, assignId=True)
    if AllChem.MMFFHasAllMoleculeParams(mol):
        field = AllChem.MMFFGetMoleculeForceField(mol, AllChem.MMFFGetMoleculeProperties(mol))
    else:
        field = AllChem.UFFGetMoleculeForceField(mol)
    kcal = units.kcal / units.mol  # eV per kcal/mol

    class _RDKitField(Calculator):
        implemented_properties = ["energy", "forces"]

        def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
            super().calculate(atoms, properties, system_changes)
            pos = [float(v) for v in self.atoms.positions.reshape(-1)]
            self.results["energy"] = field.CalcEnergy(pos) * kcal
            self.results["forces"] = -np.asarray(field.CalcGrad(pos)).reshape(-1, 3) * kcal

    return _RDKitField()


def sample_normal_modes(root, rng, params, calc=None):
    """Relax, then Boltzmann-distributed displacements along the normal modes of the minimum.

    The relaxation and Hessian use the teacher (``hessian: teacher``) or MMFF94 for molecules
    from SMILES (``hessian: mmff``: no teacher call; the teacher labels the samples later).
    Mode k (eigenvalue w_k^2 of the mass-weighted Hessian) gets amplitude q_k ~ N(0, kT / w_k^2),
    so in the harmonic limit the mean potential energy above the minimum is (3N-6) kT/2
    (classical equipartition). T cycles over ``temperatures``.
    """
    factor = params.get("min_distance_factor", DEFAULT_MIN_DISTANCE_FACTOR)
    if params.get("hessian", "teacher") == "mmff":
        calc = mmff_calculator(root)
    relaxed = _relax(root, calc, params["relax_steps"], params["fmax"])
    hess = finite_difference_hessian(relaxed, calc, params["delta"])
    vals, vecs = vibrational_modes(relaxed, hess)
    inv_sqrt_m = 1.0 / np.sqrt(np.repeat(relaxed.get_masses(), 3))
    out = []
    temps = params["temperatures"]
    for _ in range(params["per_root"]):
        T = temps[int(rng.integers(len(temps)))]
        kT = units.kB * T
        for _ in range(params["max_tries"]):
            q = rng.normal(0.0, 1.0, len(vals)) * np.sqrt(kT / vals)
            dx = (vecs @ q) * inv_sqrt_m
            atoms = relaxed.copy()
            atoms.positions = relaxed.positions + dx.reshape(-1, 3)
            if respects_min_distance(atoms, factor):
                out.append(Sample(clean_copy(atoms), -1, {"T": T, "n_modes": int(len(vals)),
                                                           "relax_steps": params["relax_steps"],
                                                           "hessian": params.get("hessian", "teacher")}))
                break
    return out


def _langevin(atoms, calc, T, timestep, friction, rng):
    from ase.md import velocitydistribution as vd
    from ase.md.langevin import Langevin

    atoms.calc = calc
    if hasattr(vd, "thermalize_momenta"):  # ASE >= 3.28 name
        vd.thermalize_momenta(atoms, temperature_K=T, rng=rng)
    else:  # pragma: no cover - older ASE
        vd.MaxwellBoltzmannDistribution(atoms, temperature_K=T, rng=rng)
    vd.Stationary(atoms)
    # fixcm=False: ASE deprecates fixcm=True, and a FixCom constraint upsets teachers that convert
    # structures to pymatgen. The slow random walk of the centre of mass is harmless for sampling.
    return Langevin(atoms, timestep * units.fs, temperature_K=T, friction=friction / units.fs, rng=rng,
                    fixcm=False)


def sample_md(root, rng, params, calc=None):
    """Langevin MD at a temperature drawn from ``temperatures``: ``equil_steps`` of equilibration,
    then a snapshot every ``interval`` steps (each snapshot's parent is the previous one).

    ``relax_steps`` > 0 first relaxes the root with the teacher (BFGS, positions only, at most
    that many steps, fmax 0.05 eV/A). A packed liquid box is far above the liquid's energy
    (water boxes packed at 1.0 g/cm^3: ~0.28 eV per molecule above the teacher's own 300 K
    liquid after 10 fs of MD); a short equilibration from it samples a hot, strained packing,
    not the liquid. Snapshots keep their momenta (``atoms.get_temperature()``); the pool stores
    positions only.
    """
    T = params["temperatures"][int(rng.integers(len(params["temperatures"])))]
    relax = int(params.get("relax_steps", 0))
    atoms = _relax(root, calc, relax, 0.05) if relax else clean_copy(root)
    dyn = _langevin(atoms, calc, T, params["timestep"], params["friction"], rng)
    if params["equil_steps"]:
        dyn.run(params["equil_steps"])
    out = []
    for k in range(params["per_root"]):
        dyn.run(params["interval"])
        snap = clean_copy(atoms)
        snap.set_momenta(atoms.get_momenta())
        step = params["equil_steps"] + (k + 1) * params["interval"]
        info = {"T": T, "step": step, "timestep": params["timestep"], "friction": params["friction"]}
        if relax:
            info["relax_steps"] = relax
        out.append(Sample(snap, k - 1, info))
    atoms.calc = None
    return out


def sample_rattle_relax(root, rng, params, calc=None):
    """Breadth-first trees: each node is rattled ``branching`` times and each rattled copy relaxed for
    ``relax_steps`` BFGS steps; the relaxed structures (and the rattled ones if ``keep_rattled``) are
    kept and become the next nodes. Stops at ``per_root`` structures."""
    factor = params.get("min_distance_factor", DEFAULT_MIN_DISTANCE_FACTOR)
    out: list[Sample] = []
    frontier = [(root, -1, 0)]
    while frontier and len(out) < params["per_root"]:
        node, node_idx, depth = frontier.pop(0)
        for _ in range(params["branching"]):
            if len(out) >= params["per_root"]:
                break
            stdev = float(rng.uniform(*params["stdev"]))
            rattled = rattle_once(node, stdev, 0.0, rng, factor, params["max_tries"])
            if rattled is None:
                continue
            parent = node_idx
            if params["keep_rattled"]:
                out.append(Sample(clean_copy(rattled), node_idx, {"stdev": round(stdev, 6), "depth": depth + 1,
                                                                  "stage": "rattled"}))
                parent = len(out) - 1
                if len(out) >= params["per_root"]:
                    break
            relaxed = _relax(rattled, calc, params["relax_steps"], params["fmax"])
            out.append(Sample(relaxed, parent, {"stdev": round(stdev, 6), "depth": depth + 1,
                                                "relax_steps": params["relax_steps"], "stage": "relaxed"}))
            frontier.append((relaxed, len(out) - 1, depth + 1))
    return out


def _bonds(atoms: Atoms, scale: float = 1.25):
    """Pairs (i < j, shift) closer than ``scale`` x sum of covalent radii."""
    from ase.data import covalent_radii

    from ..data.neighbors import edge_vectors, neighbor_list

    radii = covalent_radii[atoms.numbers]
    cell = atoms.cell.array if atoms.pbc.any() else None
    ei, es = neighbor_list(atoms.positions, cell, atoms.pbc, float(scale * 2 * radii.max()))
    vec = edge_vectors(atoms.positions, cell if cell is not None else np.zeros((3, 3)), ei, es)
    d = np.linalg.norm(vec, axis=1)
    keep = (d < scale * (radii[ei[0]] + radii[ei[1]])) & (ei[0] < ei[1])
    return ei[:, keep], vec[keep]


def stretch_bond(atoms: Atoms, rng, factor_range) -> tuple[Atoms, dict] | None:
    """Pull a random bonded pair apart to ``f`` x its length (f uniform in the range), moving both
    atoms by half the extension along the bond."""
    ei, vec = _bonds(atoms)
    if ei.shape[1] == 0:
        return None
    k = int(rng.integers(ei.shape[1]))
    i, j = ei[:, k]
    f = float(rng.uniform(*factor_range))
    shift = 0.5 * (f - 1.0) * vec[k]
    out = atoms.copy()
    pos = out.positions
    pos[i] -= shift
    pos[j] += shift
    out.positions = pos
    return out, {"method": "stretch", "factor": round(f, 6), "pair": [int(i), int(j)]}


def compress(atoms: Atoms, rng, factor_range) -> tuple[Atoms, dict]:
    """Scale the cell (periodic) or the positions about the centroid (isolated) by ``f`` < 1."""
    f = float(rng.uniform(*factor_range))
    out = atoms.copy()
    if atoms.pbc.all():
        out.set_cell(atoms.cell.array * f, scale_atoms=True)
    else:
        c = atoms.positions.mean(axis=0)
        out.positions = c + (atoms.positions - c) * f
    return out, {"method": "compress", "factor": round(f, 6)}


def sample_high_energy(root, rng, params, calc=None):
    """High-energy configurations: bond stretching, compression (+ rattle), or hot compressed MD.

    The method cycles over ``methods``. ``compress_md`` compresses, then runs ``md_steps`` of
    Langevin MD at ``temperature`` K and keeps the last frame. The generator's minimum-distance
    check still applies, so nothing enters the pool with overlapping atoms.
    """
    factor = params.get("min_distance_factor", DEFAULT_MIN_DISTANCE_FACTOR)
    out = []
    methods = params["methods"]
    for k in range(params["per_root"]):
        method = methods[(k + int(rng.integers(len(methods)))) % len(methods)]
        for _ in range(params["max_tries"]):
            if method == "stretch":
                res = stretch_bond(root, rng, params["stretch"])
                if res is None:
                    method = "compress"
                    continue
                atoms, info = res
            else:
                atoms, info = compress(root, rng, params["compress"])
                if method == "compress_md":
                    work = clean_copy(atoms)
                    dyn = _langevin(work, calc, params["temperature"], params["timestep"], 0.02, rng)
                    dyn.run(params["md_steps"])
                    work.calc = None
                    atoms = work
                    info = {**info, "method": "compress_md", "T": params["temperature"], "md_steps": params["md_steps"]}
            stdev = float(rng.uniform(*params["stdev"]))
            atoms.positions = atoms.positions + rng.normal(0.0, stdev, atoms.positions.shape)
            if respects_min_distance(atoms, factor):
                out.append(Sample(clean_copy(atoms), -1, info))
                break
    return out


SAMPLER_FUNCTIONS = {
    "none": sample_none,
    "rattle": sample_rattle,
    "normal_modes": sample_normal_modes,
    "md": sample_md,
    "rattle_relax": sample_rattle_relax,
    "high_energy": sample_high_energy,
}
