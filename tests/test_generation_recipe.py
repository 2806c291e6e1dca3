"""Recipes and the generate() engine: validation errors that name the field, the tiny recipe end to
end (EMT teacher), provenance, sizes, minimum distances, hydrogens, determinism, bad input, CLI."""

from __future__ import annotations

import copy
import json
from collections import Counter

import numpy as np
import pytest
import yaml

from mlff_distiller.cli import main
from mlff_distiller.data.store import DatasetReader
from mlff_distiller.errors import ConfigError, UserError
from mlff_distiller.generation import builtin_recipes, generate, load_recipe, validate_recipe
from mlff_distiller.generation.geometry import respects_min_distance
from mlff_distiller.generation.molecules import expected_hydrogens

PROVENANCE_KEYS = {"source", "sampler", "params", "parent", "group", "seed", "teacher"}


def small_recipe(**generation_overrides) -> dict:
    """A cheap teacher-free recipe for error and determinism checks."""
    gen = {
        "size": {"min": 5, "max": 40},
        "elements": ["H", "C", "N", "O", "Cu", "Al"],
        "count": 12,
        "sources": {"mols": {"kind": "molecules", "smiles": ["CCO", "c1ccccc1", "CC(=O)N"], "conformers": 2},
                    "metal": {"kind": "bulk", "crystals": ["Cu-fcc", "Al-fcc"]}},
        "mix": [{"source": "mols", "sampler": "rattle", "fraction": 0.5},
                {"source": "metal", "sampler": "rattle", "fraction": 0.5, "params": {"strain": 0.05}}],
    }
    gen.update(generation_overrides)
    return {"name": "small", "seed": 3, "generation": gen}


def read_pool(path):
    r = DatasetReader(path)
    try:
        return [r.get_atoms(i) for i in range(len(r))], [r.provenance(i) for i in range(len(r))], dict(r.attrs)
    finally:
        r.close()


@pytest.fixture(scope="module")
def tiny_pool(tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "pool.h5"
    summary = generate("tiny", out, progress=False)
    atoms, prov, attrs = read_pool(out)
    return out, summary, atoms, prov, attrs


def test_builtin_recipes_validate_and_tiers_add_up():
    assert {"tiny", "quickstart", "seed-m2", "silicon", "water", "tiny-active"} <= set(builtin_recipes())
    tiny = validate_recipe(load_recipe("tiny"))
    assert 30 <= sum(tiny.counts()) <= 60
    assert tiny.elements <= {"H", "C", "N", "O", "Al", "Ni", "Cu", "Pd", "Ag", "Pt", "Au"}  # EMT's elements
    assert load_recipe("tiny")["teacher"] == {"name": "ase", "calculator": "ase.calculators.emt:EMT"}
    qs = validate_recipe(load_recipe("quickstart"))
    assert 500 <= sum(qs.counts()) <= 1500
    kinds = {qs.sources[e.source]["kind"] for e in qs.mix}
    assert {"molecules", "bulk"} <= kinds
    m2 = validate_recipe(load_recipe("seed-m2"))
    assert (m2.size.min, m2.size.max) == (10, 500)
    assert [sum(m2.counts(t)) for t in ("1k", "10k", "full")] == [1000, 10000, 120000]
    assert sum(m2.counts()) == 1000  # default tier
    samplers = {e.sampler for e in m2.mix}
    assert {"none", "rattle", "normal_modes", "md", "rattle_relax", "high_energy"} <= samplers
    # the specialized recipes: one material each, held-out teacher MD and the specialized targets
    from mlff_distiller.bench.runner import BenchConfig

    for name, elements in (("silicon", {"Si"}), ("water", {"H", "O"})):
        rec = validate_recipe(load_recipe(name))
        assert rec.elements == elements and sum(rec.counts()) >= 400
        bench = {k: v for k, v in load_recipe(name)["bench"].items() if k not in ("systems", "test_fraction")}
        cfg = BenchConfig.from_dict(bench)
        assert cfg.heldout and cfg.targets == {"force_rel_rmse": 0.10, "energy_mae_mev": 5.0,
                                               "nve_drift_mev_per_atom_ps": 1.0, "md_blowups": 0.0}


def test_tiny_pool_provenance_sizes_distances(tiny_pool):
    path, summary, atoms, prov, attrs = tiny_pool
    assert len(atoms) == summary["n_structures"] == summary["requested"] == 40
    assert attrs["generation_complete"] is True and attrs["recipe_name"] == "tiny"
    assert attrs["recipe"] == load_recipe("tiny")  # the resolved recipe travels with the pool
    groups_by_root = {}
    for i, (a, p) in enumerate(zip(atoms, prov)):
        assert set(p) == PROVENANCE_KEYS
        assert p["teacher"] == "" and p["source"] and p["group"].startswith(p["source"].split(":")[0])
        assert -1 <= p["parent"] < i
        if p["parent"] >= 0:
            assert prov[p["parent"]]["group"] == p["group"]
        assert isinstance(p["seed"], int) and p["seed"] >= 0
        assert json.loads(json.dumps(p["params"])) == p["params"]
        assert 5 <= len(a) <= 60
        assert respects_min_distance(a, 0.6)
        assert a.calc is None
        groups_by_root.setdefault(p["group"], set()).add(p["source"])
    assert all(len(v) == 1 for v in groups_by_root.values())
    samplers = Counter(p["sampler"] for p in prov)
    assert set(samplers) == {"none", "rattle", "md", "rattle_relax", "normal_modes", "high_energy"}
    sources = {p["source"].split(":")[0] for p in prov}
    assert sources == {"smiles", "bulk", "alloy", "surface", "cluster", "liquid"}


def test_tiny_pool_positions_and_cells_lie_on_the_grid(tiny_pool):
    """generate rounds every coordinate and cell entry to a multiple of 2^-16 A before any
    teacher sees it (format 3: int32 counts, cell float32); the values read back are exact in
    float32, so a float32 teacher computes on exactly the stored coordinates."""
    import h5py

    path, _, atoms, _, _ = tiny_pool
    with h5py.File(path, "r") as h5:
        assert h5["positions"].dtype == np.int32 and h5.attrs["positions_grid_bits"] == 16
        assert h5["cell"].dtype == np.float32
    for a in atoms:
        for x in (a.positions, a.cell.array):
            assert np.array_equal(x * 2**16, np.rint(x * 2**16)) and np.array_equal(x.astype(np.float32), x)
    assert any(not np.array_equal(a.positions * 2**10, np.rint(a.positions * 2**10)) for a in atoms)


def test_tiny_pool_molecules_keep_every_hydrogen(tiny_pool):
    _, _, atoms, prov, _ = tiny_pool
    n_mol = 0
    for a, p in zip(atoms, prov):
        if p["source"].startswith("smiles:"):
            smiles = p["source"][len("smiles:"):]
            n_h = int((a.numbers == 1).sum())
            assert n_h == expected_hydrogens(smiles)
            assert a.info.get("charge") == 0
            n_mol += n_h > 0
    assert n_mol >= 10  # hydrogen-bearing molecules made it into the pool


def test_same_seed_gives_identical_pool(tmp_path):
    """Every stochastic path at once: conformers, supercells, alloys, packing, rattles, normal modes,
    Langevin MD and hot compressed MD (EMT as the teacher)."""
    from ase.calculators.emt import EMT

    recipe = small_recipe(count=None)
    gen = recipe["generation"]
    gen["sources"].update({"alloy": {"kind": "alloy", "elements": ["Cu", "Al"]},
                           "water": {"kind": "liquid", "solvent": "O"}})
    gen["size"] = {"min": 5, "max": 24}
    gen["mix"] = [
        {"source": "mols", "sampler": "rattle", "count": 3},
        {"source": "mols", "sampler": "normal_modes", "count": 3, "params": {"relax_steps": 3, "per_root": 3}},
        {"source": "alloy", "sampler": "md", "count": 3,
         "params": {"per_root": 3, "equil_steps": 4, "interval": 3, "timestep": 2.0}},
        {"source": "metal", "sampler": "high_energy", "count": 2,
         "params": {"methods": ["compress_md"], "md_steps": 4, "per_root": 2}},
        {"source": "metal", "sampler": "rattle_relax", "count": 2, "params": {"relax_steps": 2, "per_root": 2}},
        {"source": "water", "sampler": "none", "count": 2},
    ]
    del gen["count"]
    pools = []
    for name in ("a.h5", "b.h5"):
        generate(recipe, tmp_path / name, progress=False, calculator=EMT())
        pools.append(read_pool(tmp_path / name))
    (atoms_a, prov_a, _), (atoms_b, prov_b, _) = pools
    assert len(atoms_a) == 15 and prov_a == prov_b
    for a, b in zip(atoms_a, atoms_b):
        np.testing.assert_array_equal(a.numbers, b.numbers)
        np.testing.assert_array_equal(a.positions, b.positions)
        np.testing.assert_array_equal(a.cell.array, b.cell.array)


def test_other_seed_gives_other_pool(tmp_path):
    generate(small_recipe(), tmp_path / "a.h5", progress=False)
    generate(small_recipe(), tmp_path / "b.h5", progress=False, seed=4)
    a, pa, _ = read_pool(tmp_path / "a.h5")
    b, pb, _ = read_pool(tmp_path / "b.h5")
    assert len(a) == len(b) == 12
    assert any(x.positions.shape != y.positions.shape or not np.allclose(x.positions, y.positions)
               for x, y in zip(a, b))
    assert pa[0]["seed"] != pb[0]["seed"]


def test_invalid_smiles_is_skipped_named_and_counted(tmp_path, capsys):
    recipe = small_recipe()
    recipe["generation"]["sources"]["mols"]["smiles"] = ["CCO", "C1CC", "c1ccccc1", "XyZ"]
    summary = generate(recipe, tmp_path / "p.h5", progress=True)
    assert summary["n_structures"] == 12
    assert summary["n_skipped_smiles"] == 2
    skipped = " ".join(s["item"] for s in summary["skipped"])
    assert "C1CC" in skipped and "XyZ" in skipped
    err = capsys.readouterr().err
    assert "skipped SMILES 'C1CC'" in err
    _, prov, _ = read_pool(tmp_path / "p.h5")
    assert {p["source"] for p in prov if p["source"].startswith("smiles")} == {"smiles:CCO", "smiles:c1ccccc1"}


def _error(recipe) -> str:
    with pytest.raises(ConfigError) as err:
        validate_recipe(recipe)
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_recipe_errors_name_the_field():
    r = small_recipe()
    r["genration"] = r.pop("generation")
    assert "did you mean 'generation'" in _error(r)
    r = small_recipe()
    r["generation"]["sources"]["metal"]["crystal"] = ["Cu-fcc"]
    assert "generation.sources.metal" in _error(r) and "crystals" in _error(r)
    r = small_recipe(elements=["H", "C", "Qq"])
    assert "unknown element 'Qq'" in _error(r)
    r = small_recipe(size={"min": 50, "max": 20})
    assert "impossible size bounds" in _error(r)
    r = small_recipe(size={"min": 200, "max": 300})  # no molecule that large
    assert "generation.sources.mols" in _error(r)
    r = small_recipe()
    r["generation"]["mix"][0]["sampler"] = "shake"
    assert "allowed:" in _error(r) and "shake" in _error(r)
    r = small_recipe()
    r["generation"]["mix"][0]["fraction"] = 0.9
    assert "add up to" in _error(r)
    r = small_recipe()
    r["generation"]["sources"]["x"] = {"kind": "crystal"}
    assert "kind" in _error(r) and "bulk" in _error(r)
    r = small_recipe()
    r["generation"]["mix"][1]["source"] = "metals"
    assert "not a defined source" in _error(r)
    r = small_recipe()
    r["seed"] = -1
    assert "seed" in _error(r)


@pytest.mark.parametrize("path, value, expected", [
    (["size", "min"], 0, "generation.size.min = 0 is invalid: must be >= 1 atoms"),
    (["size", "distribution"], "unifrm",
     "generation.size.distribution: unknown value 'unifrm' (did you mean 'uniform'?); allowed: loguniform, uniform"),
    (["min_distance_factor"], 2, "generation.min_distance_factor = 2 is invalid: must be in [0, 2)"),
    (["count"], True, "generation.count must be an integer, got True"),
    (["tiers"], {"1k": "x"}, "generation.tiers.1k must be an integer, got 'x'"),
    (["tiers"], {"1k": 0}, "generation.tiers.1k = 0 is invalid: must be >= 1"),
    (["default_tier"], "big", "generation.default_tier: 'big' is not one of the tiers (none)"),
    (["sources", "x"], {"kind": "crystal"}, "generation.sources.x.kind: unknown value 'crystal'; allowed: molecules,"),
    (["sources", "mols", "conformers"], 0, "generation.sources.mols.conformers = 0 is invalid: must be >= 1"),
    (["sources", "mols", "optimizer"], "uf", "generation.sources.mols.optimizer: unknown value 'uf'"),
    (["sources", "mols", "smiles"], [5], "generation.sources.mols.smiles = [5] is invalid: must be 'builtin' or"),
    (["sources", "metal", "size"], {"mx": 7},
     "generation.sources.metal.size: unknown key 'mx' (did you mean 'max'?); allowed: min, max, distribution"),
    (["sources", "metal", "size"], {"min": 30, "max": 10},
     "generation.sources.metal.size: impossible size bounds, min 30 > max 10 atoms"),
    (["sources", "metal", "crystal"], ["Cu-fcc"],
     "generation.sources.metal: unknown key 'crystal' (did you mean 'crystals'?); allowed: kind, size, crystals, "
     "vacancies"),
    (["sources", "w"], {"kind": "liquid"}, "generation.sources.w.solvent: missing; give the solvent SMILES"),
    (["sources", "w"], {"kind": "liquid", "solvent": "O", "density": 0},
     "generation.sources.w.density = 0 is invalid: must be > 0 g/cm^3"),
    (["mix", 0, "fraction"], 2, "generation.mix[0].fraction = 2 is invalid: must be in (0, 1] (share of the tier)"),
    (["mix", 0, "count"], 3, "generation.mix[0]: give exactly one of fraction (share of the tier) or count"),
    (["mix", 0, "sampler"], "shake", "generation.mix[0].sampler: unknown value 'shake'; allowed: none, rattle,"),
    (["mix", 0, "params"], 3, "generation.mix[0].params must be a mapping, got 3"),
    (["mix", 1, "size"], {"max": 200}, "generation.mix[1].size: bounds 5-200 leave generation.size 5-40"),
])
def test_generation_sections_give_the_house_messages(path, value, expected):
    """Every mapping of generation is a typed section: one line naming the field, its range or
    choices; the rules between parts (size inside the parent's, one of fraction/count) too."""
    recipe = small_recipe()
    target = recipe["generation"]
    for key in path[:-1]:
        target = target[key]
    target[path[-1]] = value
    assert _error(recipe).startswith(expected)


def test_generation_sections_take_yaml_numbers_and_inherit_size_bounds():
    """An integral float is an integer (count, tiers, size bounds); a mix entry's size keeps the
    bounds it leaves out from its source, the source's from generation.size."""
    recipe = small_recipe(count=12.0, size={"min": 5.0, "max": 40})
    recipe["generation"]["sources"]["metal"]["size"] = {"max": 30}
    recipe["generation"]["mix"][1]["size"] = {"min": 8, "distribution": "uniform"}
    cfg = validate_recipe(recipe)
    assert cfg.count == 12 and isinstance(cfg.count, int) and cfg.size.min == 5
    assert (cfg.sources["metal"]["_size"].min, cfg.sources["metal"]["_size"].max) == (5, 30)
    assert (cfg.mix[1].size.min, cfg.mix[1].size.max, cfg.mix[1].size.distribution) == (8, 30, "uniform")
    assert cfg.mix[0].size == cfg.sources["mols"]["_size"]


def test_size_range_is_a_checked_section():
    """SizeRange checks itself wherever it is built, and is named where build() puts it."""
    from mlff_distiller.generation.sources import SizeRange
    from mlff_distiller.settings import build

    with pytest.raises(ConfigError, match=r"^generation.size: impossible size bounds, min 50 > max 20 atoms$"):
        SizeRange(50, 20)
    with pytest.raises(ConfigError, match=r"^generation.mix\[3\].size.max = 0 is invalid: must be >= 1 atoms$"):
        build(SizeRange, {"max": 0}, "generation.mix[3].size")
    assert hash(SizeRange(5, 9)) == hash(SizeRange(5, 9))  # frozen: usable as a key


def test_unknown_tier_and_existing_output(tmp_path):
    recipe = small_recipe()
    with pytest.raises(ConfigError, match="tier '1k' unknown"):
        generate(recipe, tmp_path / "p.h5", tier="1k", progress=False)
    target = tmp_path / "exists.h5"
    target.write_bytes(b"precious")
    with pytest.raises(UserError, match="already exists"):
        generate(recipe, target, progress=False)
    assert target.read_bytes() == b"precious"


def test_recipe_file_with_relative_cif_and_bad_cif(tmp_path):
    import ase.io
    from ase.build import bulk

    ase.io.write(tmp_path / "mgo.cif", bulk("MgO", "rocksalt", a=4.21, cubic=True))
    recipe = {"name": "files", "seed": 1, "generation": {
        "size": {"min": 8, "max": 70}, "count": 4,
        "sources": {"mine": {"kind": "file", "paths": ["mgo.cif"]}},
        "mix": [{"source": "mine", "sampler": "rattle", "fraction": 1.0}]}}
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    summary = generate(str(path), tmp_path / "pool.h5", progress=False)
    assert summary["n_structures"] == 4 and set(summary["elements"]) == {"Mg", "O"}
    (tmp_path / "mgo.cif").write_text("data_broken\n_cell_length_a x\nloop_\n_atom_site_label\n")
    with pytest.raises(ConfigError, match="mgo.cif"):
        load_recipe(str(path))


def test_yaml_errors_and_missing_recipe(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ngeneration: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_recipe(str(bad))
    with pytest.raises(ConfigError, match="quickstart"):
        load_recipe("quikstart")


def test_mix_counts_per_tier_are_exact():
    r = small_recipe(tiers={"a": 7, "b": 1001}, default_tier="b")
    del r["generation"]["count"]
    r["generation"]["mix"][0]["fraction"] = 1 / 3
    r["generation"]["mix"][1]["fraction"] = 2 / 3
    cfg = validate_recipe(r)
    assert cfg.counts("a") in ([2, 5], [3, 4]) and sum(cfg.counts("a")) == 7
    assert cfg.counts() == cfg.counts("b") and sum(cfg.counts("b")) == 1001


def test_sampler_needing_teacher_without_teacher_is_an_error(tmp_path):
    r = small_recipe()
    r["generation"]["mix"][1]["sampler"] = "md"
    r["generation"]["mix"][1]["params"] = {}
    with pytest.raises(ConfigError, match="teacher"):
        generate(r, tmp_path / "p.h5", progress=False)


def test_failing_teacher_stops_with_one_line_and_leaves_no_pool(tmp_path):
    from ase.calculators.calculator import Calculator

    class Broken(Calculator):
        implemented_properties = ("energy", "forces")

        def calculate(self, atoms=None, properties=("energy",), system_changes=()):
            raise RuntimeError("model exploded")

    r = small_recipe()
    r["generation"]["mix"][1]["sampler"] = "md"
    r["generation"]["mix"][1]["params"] = {"equil_steps": 2, "interval": 2}
    with pytest.raises(UserError, match="model exploded") as err:
        generate(r, tmp_path / "p.h5", progress=False, calculator=Broken())
    assert "mix[1]" in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "p.h5").exists() and not (tmp_path / "p.h5.journal").exists()


def test_cli_generate_and_one_line_errors(tmp_path, capsys):
    recipe = small_recipe()
    path = tmp_path / "small.yaml"
    path.write_text(yaml.safe_dump(recipe))
    out = tmp_path / "pool.h5"
    assert main(["generate", str(path), "-o", str(out), "--quiet"]) == 0
    text = capsys.readouterr().out
    assert "wrote 12 of 12 structures" in text and "rattle" in text
    assert len(DatasetReader(out)) == 12
    # the output exists now: exit 2 with one line, file untouched
    assert main(["generate", str(path), "-o", str(out), "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mlff-distill: error:") and "already exists" in err and "\n" not in err
    broken = copy.deepcopy(recipe)
    broken["generation"]["size"] = {"min": 30, "max": 3}
    path.write_text(yaml.safe_dump(broken))
    assert main(["generate", str(path), "-o", str(tmp_path / "x.h5"), "--quiet"]) == 2
    assert "impossible size bounds" in capsys.readouterr().err


def test_cli_module_import_is_light():
    """``mlff-distill --help`` imports generation.cli: it must not drag in RDKit, ASE or torch."""
    import subprocess
    import sys

    code = ("import sys, mlff_distiller.generation.cli, mlff_distiller.generation as g; "
            "print(sorted(m for m in ('rdkit', 'ase', 'torch', 'yaml') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
