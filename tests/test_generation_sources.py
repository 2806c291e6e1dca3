"""Structure sources: crystal prototypes, supercells sized to bounds, alloys, slabs, clusters,
liquids at a target density with a minimum-distance guarantee, user files."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.data import atomic_masses

from mlff_distiller.errors import ConfigError
from mlff_distiller.generation import sources as S
from mlff_distiller.generation.geometry import (
    closest_contact_ratio,
    min_pair_distance,
    respects_min_distance,
    supercell_repeats,
)


def test_every_builtin_crystal_builds_with_its_stoichiometry():
    table = S.builtin_crystals()
    structures = {spec["structure"] for spec in table.values()}
    assert {
        "fcc",
        "bcc",
        "hcp",
        "diamond",
        "rocksalt",
        "zincblende",
        "wurtzite",
        "perovskite",
        "fluorite",
    } <= structures
    for name, spec in table.items():
        atoms = S.build_crystal(spec, name)
        assert atoms.pbc.all()
        syms = S.formula_symbols(spec["formula"], name)
        counts = Counter(atoms.get_chemical_symbols())
        ratio = {"perovskite": [1, 1, 3], "fluorite": [1, 2]}.get(spec["structure"], [1] * len(syms))
        n_units = counts[syms[0]] // ratio[0]
        assert counts == Counter({s: r * n_units for s, r in zip(syms, ratio)}), name
        # nearest neighbours at a chemical distance: 0.75-1.6 x sum of covalent radii
        assert respects_min_distance(atoms, 0.75), name
        assert min_pair_distance(atoms) < 4.0, name


def test_perovskite_geometry():
    atoms = S.build_crystal({"formula": "SrTiO3", "structure": "perovskite", "a": 3.905})
    assert atoms.get_chemical_formula() == "O3SrTi"
    d = atoms.get_distances(1, [2, 3, 4], mic=True)  # Ti-O = a/2
    np.testing.assert_allclose(d, 3.905 / 2, atol=1e-9)


def test_supercells_hit_target_within_bounds():
    cell = bulk("Cu", "fcc", a=3.61, cubic=True)
    for target in (10, 37, 100, 256, 500):
        reps = supercell_repeats(cell, target, 10, 500)
        n = 4 * np.prod(reps)
        assert 10 <= n <= 500
        assert abs(math.log(n / target)) < 0.5
    assert supercell_repeats(cell, 3, 1, 3) is None  # the unit cell alone exceeds the bound
    # near-isotropic choice: 108 atoms -> 3x3x3, not 1x1x27
    assert sorted(supercell_repeats(cell, 108, 100, 120)) == [3, 3, 3]


def test_bulk_source_sizes_within_bounds_and_smooth():
    size = S.SizeRange(10, 300)
    src = S.BulkSource("b", size, "all")
    rng = np.random.default_rng(0)
    sizes = []
    for i in range(80):
        root = src.make_root(i, rng)
        if root is None:
            continue
        assert size.contains(len(root.atoms))
        assert root.source.startswith("bulk:") and root.group.startswith(root.source)
        assert respects_min_distance(root.atoms)
        sizes.append(len(root.atoms))
    assert len(sizes) >= 70
    # log-uniform targets spread the sizes over the range
    assert min(sizes) < 30 and max(sizes) > 150


def test_unknown_element_and_crystal_are_one_line_config_errors():
    with pytest.raises(ConfigError, match="unknown element 'Xx'"):
        S.element_set(["H", "Xx"])
    with pytest.raises(ConfigError, match="unknown crystal 'Cu-bcx'"):
        S.BulkSource("b", S.SizeRange(), ["Cu-bcx"])
    with pytest.raises(ConfigError, match="structure"):
        S.build_crystal({"formula": "Cu", "structure": "fcx", "a": 3.6})
    with pytest.raises(ConfigError, match="not in generation.elements"):
        S.BulkSource("b", S.SizeRange(), ["NaCl-rocksalt"], elements={"Na", "Cu"})


def test_random_alloys_composition_and_vegard():
    src = S.AlloySource("a", S.SizeRange(20, 200), ["Cu", "Au"], "fcc")
    rng = np.random.default_rng(1)
    fractions, volumes = [], []
    for i in range(12):
        atoms = src.make_root(i, rng).atoms
        x_au = np.mean(atoms.numbers == 79)
        fractions.append(x_au)
        volumes.append(atoms.get_volume() / len(atoms))
    assert np.std(fractions) > 0.1  # compositions vary per root
    # Vegard: volume per atom grows with the Au fraction, between pure Cu and pure Au
    assert np.corrcoef(fractions, volumes)[0, 1] > 0.99
    assert 3.61**3 / 4 - 1e-9 <= min(volumes) and max(volumes) <= 4.08**3 / 4 + 1e-9


def test_surface_slabs_have_vacuum():
    src = S.SurfaceSource("s", S.SizeRange(10, 200), ["Cu-fcc", "MgO-rocksalt"], miller=[[1, 1, 1], [1, 0, 0]],
                          layers=[2, 4], vacuum=6.0)
    rng = np.random.default_rng(2)
    for i in range(8):
        root = src.make_root(i, rng)
        if root is None:
            continue
        slab = root.atoms
        assert slab.pbc.all() and 10 <= len(slab) <= 200
        z = slab.positions[:, 2]
        gap = slab.cell[2, 2] - (z.max() - z.min())
        assert gap >= 2 * 6.0 - 1e-6  # vacuum on both sides
        assert respects_min_distance(slab)


def test_clusters_sizes_and_shapes():
    src = S.ClusterSource("c", S.SizeRange(10, 160), ["Cu", "Pt"])
    rng = np.random.default_rng(3)
    seen = set()
    for i in range(12):
        root = src.make_root(i, rng)
        atoms = root.atoms
        assert 10 <= len(atoms) <= 160 and not atoms.pbc.any()
        assert respects_min_distance(atoms, 0.8)
        seen.add(root.source.split("-")[1])
    assert seen == {"icosahedron", "decahedron", "octahedron"}
    with pytest.raises(ConfigError, match="fcc"):
        S.ClusterSource("c", S.SizeRange(), ["Si"])
    with pytest.raises(ConfigError, match="no icosahedron cluster has between 14 and 20 atoms"):
        S.ClusterSource("c", S.SizeRange(14, 20), ["Cu"], shapes=["icosahedron"])


def _molecule_ids(templates):
    return np.concatenate([[k] * len(t) for k, t in enumerate(templates)])


def test_liquid_packing_density_and_min_distance():
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    templates = [water] * 40
    mass = 40 * atomic_masses[[8, 1, 1]].sum()
    length = (mass * 1.66053906660 / 1.0) ** (1 / 3)
    atoms = S.pack_molecules(templates, length, 1.6, np.random.default_rng(4))
    assert atoms is not None and len(atoms) == 120
    density = atomic_masses[atoms.numbers].sum() * 1.66053906660 / atoms.get_volume()
    assert abs(density - 1.0) < 1e-6
    mol_id = _molecule_ids(templates)
    d = atoms.get_all_distances(mic=True)
    inter = mol_id[:, None] != mol_id[None, :]
    assert d[inter].min() >= 1.6 - 1e-9
    # molecules stay intact (intramolecular distances preserved under rotation + wrapping)
    for k in range(40):
        idx = np.flatnonzero(mol_id == k)
        np.testing.assert_allclose(np.sort(d[np.ix_(idx, idx)].ravel()),
                                   np.sort(water.get_all_distances().ravel()), atol=1e-9)


def test_liquid_source_solvated_box():
    src = S.LiquidSource("l", S.SizeRange(20, 200), "O", solutes=["c1ccccc1O"], density=1.0, tolerance=1.6)
    rng = np.random.default_rng(5)
    roots = [src.make_root(i, rng) for i in range(6)]
    roots = [r for r in roots if r is not None]
    assert len(roots) >= 4
    for r in roots:
        counts = Counter(r.atoms.get_chemical_symbols())
        assert counts["C"] == 6  # one phenol
        assert 20 <= len(r.atoms) <= 200
        assert r.source == "liquid:O+c1ccccc1O"
        assert closest_contact_ratio(r.atoms) > 0.6


def test_impossible_liquid_density_fails_cleanly():
    water = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    assert S.pack_molecules([water] * 30, 6.0, 1.6, np.random.default_rng(0), max_attempts=64) is None
    with pytest.raises(ConfigError, match="density"):
        S.LiquidSource("l", S.SizeRange(), "O", density=-1)


def test_file_source_reads_cif_and_extxyz(tmp_path):
    import ase.io

    nacl = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    ase.io.write(tmp_path / "nacl.cif", nacl)
    water = Atoms("H2O", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    frames = []
    for k in range(2):
        box = Atoms()
        for shift in ([0, 0, 0], [0, 0, 3], [0, 3, 0], [3, 0, k]):
            m = water.copy()
            m.translate(shift)
            box += m
        frames.append(box)
    ase.io.write(tmp_path / "w.extxyz", frames)
    src = S.FileSource("f", S.SizeRange(10, 100), [str(tmp_path / "nacl.cif"), str(tmp_path / "w.extxyz")])
    rng = np.random.default_rng(0)
    r0 = src.make_root(0, rng)
    assert r0.source == "file:nacl.cif" and 10 <= len(r0.atoms) <= 100
    assert Counter(r0.atoms.get_chemical_symbols())["Na"] == len(r0.atoms) // 2
    r1 = src.make_root(1, rng)
    assert r1.source == "file:w.extxyz#0" and len(r1.atoms) == 12


@pytest.mark.filterwarnings("ignore:Wrong number:UserWarning")  # ASE's CIF parser complains first
def test_unreadable_cif_is_a_one_line_error(tmp_path):
    bad = tmp_path / "broken.cif"
    bad.write_text("data_x\n_cell_length_a 4.0\nloop_\n_atom_site_label\n_atom_site_fract_x\nthis is not a cif\n")
    with pytest.raises(ConfigError) as err:
        S.FileSource("f", S.SizeRange(), [str(bad)])
    msg = str(err.value)
    assert "broken.cif" in msg and "\n" not in msg
    with pytest.raises(ConfigError, match="not found"):
        S.FileSource("f", S.SizeRange(), [str(tmp_path / "nope.cif")])


def test_bulk_vacancies_remove_atoms_and_name_the_group():
    src = S.BulkSource("b", S.SizeRange(30, 70), ["Si-diamond"], vacancies=[1, 2])
    rng = np.random.default_rng(0)
    seen = set()
    for i in range(12):
        r = src.make_root(i, rng)
        n_vac = int(r.group.rsplit("/vac", 1)[1])
        seen.add(n_vac)
        assert 1 <= n_vac <= 2 and len(r.atoms) % 8 == 8 - n_vac  # diamond supercells hold 8k atoms
        assert closest_contact_ratio(r.atoms) > 0.9  # removing atoms never makes a contact
    assert seen == {1, 2}
    plain = S.BulkSource("b", S.SizeRange(30, 70), ["Si-diamond"])  # default: no defects
    assert len(plain.make_root(0, np.random.default_rng(0)).atoms) % 8 == 0
    for bad in (-1, [2, 1], "two", [1, 2, 3]):
        with pytest.raises(ConfigError, match="vacancies"):
            S.BulkSource("b", S.SizeRange(30, 70), ["Si-diamond"], vacancies=bad)


def test_ice_ic_obeys_the_ice_rules():
    atoms = S.build_crystal({"formula": "H2O", "structure": "ice-ic", "a": 6.35})
    assert atoms.get_chemical_formula() == "H16O8" and atoms.pbc.all()
    d = atoms.get_all_distances(mic=True)
    o = np.flatnonzero(atoms.numbers == 8)
    h = np.flatnonzero(atoms.numbers == 1)
    # every H: one O at the O-H bond length, the next O across the hydrogen bond (2.75 - 0.96 A)
    for k in h:
        near = np.sort(d[k, o])
        assert near[0] == pytest.approx(0.9572, abs=1e-6) and near[1] == pytest.approx(1.792, abs=2e-3)
    # every O: exactly two covalent H
    assert sorted((d[np.ix_(o, h)] < 1.2).sum(axis=1)) == [2] * 8
    with pytest.raises(ConfigError, match="ice-ic"):
        S.build_crystal({"formula": "NaCl", "structure": "ice-ic", "a": 6.35})


def test_liquid_slab_keeps_molecules_whole_behind_a_vacuum_gap():
    src = S.LiquidSource("w", S.SizeRange(30, 90, "uniform"), "O", vacuum=12.0)
    r = src.make_root(0, np.random.default_rng(0))
    atoms = r.atoms
    assert r.source == "liquid:O/slab"
    z = atoms.positions[:, 2]
    c = atoms.cell[2, 2]
    assert c - (z.max() - z.min()) > 12.0 - 1.0  # a vacuum gap of about 12 A along z
    lx, ly = atoms.cell[0, 0], atoms.cell[1, 1]
    for k in range(0, len(atoms), 3):  # O, H, H per molecule: whole along z (no image needed there)
        for j in (k + 1, k + 2):
            v = atoms.positions[j] - atoms.positions[k]
            v[0] -= lx * np.round(v[0] / lx)
            v[1] -= ly * np.round(v[1] / ly)
            assert np.linalg.norm(v) < 1.1
    with pytest.raises(ConfigError, match="vacuum"):
        S.LiquidSource("w", S.SizeRange(30, 90), "O", vacuum=-1)


@pytest.mark.parametrize("build, message", [
    (lambda size: S.SurfaceSource("s", size, ["Si-diamond"], vacuum=-1.0), "generation.sources.s.vacuum = -1.0"),
    (lambda size: S.LiquidSource("w", size, "O", density=0.0), "generation.sources.w.density = 0.0"),
    (lambda size: S.LiquidSource("w", size, "O", tolerance=-1.0), "generation.sources.w.tolerance = -1.0"),
    (lambda size: S.ClusterSource("c", size, ["Cu"], shapes=["cube"]), "generation.sources.c.shapes"),
    (lambda size: S.AlloySource("a", size, ["Cu"]), "at least two element symbols"),
    (lambda size: S.AlloySource("a", size, ["Cu", "Ni"], structure="sc"), "generation.sources.a.structure"),
])
def test_sources_built_in_python_are_checked_by_their_recipe_section(build, message):
    """A source object built directly gets its kind's section checks (one owner of each range)
    and the same one-line message a recipe would."""
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("[", r"\[")) as err:
        build(S.SizeRange(8, 96))
    assert "\n" not in str(err.value)
