"""Validation checks: each catches a planted defect and passes a clean EMT-labelled set."""

from __future__ import annotations

import os

os.environ.setdefault("NUMBA_NUM_THREADS", "1")

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from mlff_distiller.errors import ConfigError, DatasetError
from mlff_distiller.quality import CHECK_NAMES, QualityConfig, validate
from mlff_distiller.quality.synthetic import emt_dataset, label_emt

CLEAN_SOURCES = ("bulk:Cu-fcc", "bulk:Al-fcc", "cluster:Ag-ico13")
PLANT = 4  # index of the planted defect


@pytest.fixture(scope="module")
def clean():
    return emt_dataset(CLEAN_SOURCES, n_per_source=5, amplitude=0.05, seed=3)


def _copy(ds):
    out = []
    for a in ds:
        b = a.copy()
        b.info["provenance"] = dict(a.info["provenance"])
        b.calc = SinglePointCalculator(b, **{k: np.array(v, copy=True) if k != "energy" else v
                                              for k, v in a.calc.results.items()})
        out.append(b)
    return out


def _results(atoms):
    return atoms.calc.results


def plant_finite(ds):
    _results(ds[PLANT])["forces"][2, 1] = np.nan


def plant_labels_present(ds):
    del _results(ds[PLANT])["forces"]


def plant_min_distance(ds):
    a = ds[PLANT]
    a.positions[1] = a.positions[0] + [0.3, 0.0, 0.0]
    label_emt(a)


def plant_max_force(ds):
    _results(ds[PLANT])["forces"][0] = [80.0, 0.0, 0.0]
    _results(ds[PLANT])["forces"][1] = [-80.0, 0.0, 0.0]


def plant_energy_outlier(ds):
    _results(ds[PLANT])["energy"] += 2.0 * len(ds[PLANT])  # +2 eV/atom


def plant_sentinel_energy(ds):
    _results(ds[PLANT])["energy"] = 0.0


def plant_volume_per_atom(ds):
    a = ds[PLANT]
    a.set_cell(a.cell[:] * 4.0, scale_atoms=True)  # a bohr/A-style unit slip: 64x the volume
    a.set_cell(a.cell[:] * 10.0, scale_atoms=False)  # and a vacuum on top: >2000 A^3/atom


def plant_net_force(ds):
    _results(ds[PLANT])["forces"] += [0.2, 0.0, 0.0]


def plant_stress(ds):
    _results(ds[PLANT])["stress"] = np.array([3.0, 0.0, 0.0, 0.0, 0.0, 0.0])


PLANTERS = {name: globals()[f"plant_{name}"] for name in CHECK_NAMES}


def test_every_check_has_a_planted_defect():
    assert set(PLANTERS) == set(CHECK_NAMES)


def test_clean_set_passes_every_check(clean):
    report = validate(clean)
    assert report.n_structures == len(clean)
    assert set(report.flags) == set(CHECK_NAMES)
    assert report.counts == {name: 0 for name in CHECK_NAMES}, report.summary()
    assert report.n_flagged == 0 and report.flagged_fraction == 0.0


@pytest.mark.parametrize("check", CHECK_NAMES)
def test_check_catches_planted_defect(clean, check):
    ds = _copy(clean)
    assert ds[PLANT].info["provenance"]["source"] == "bulk:Cu-fcc"  # periodic, has stress
    PLANTERS[check](ds)
    report = validate(ds)
    assert report.flagged_indices(check) == [PLANT], report.summary()
    assert report.flagged[PLANT]
    # the same check with this check disabled no longer flags the structure for it
    off = validate(ds, {"checks": {check: {"enabled": False}}})
    assert check not in off.flags


def test_min_distance_relative_to_covalent_radii(clean):
    ds = _copy(clean)
    a = ds[PLANT]
    # 1.0 A is above the absolute 0.5 A floor but below 0.5 x (r_Cu + r_Cu) = 1.32 A
    d = a.positions[1] - a.positions[0]
    a.positions[1] = a.positions[0] + d / np.linalg.norm(d) * 1.0
    report = validate(ds)
    assert report.flagged_indices("min_distance") == [PLANT]
    assert report.values["min_distance"][PLANT] == pytest.approx(1.0, abs=1e-9)
    relaxed = validate(ds, {"checks": {"min_distance": {"covalent_fraction": 0.3}}})
    assert relaxed.flagged_indices("min_distance") == []


def test_min_distance_sees_periodic_images():
    a = Atoms("Cu2", positions=[[0.1, 5, 5], [9.7, 5, 5]], cell=[10, 10, 10], pbc=True)
    b = a.copy()
    b.pbc = False
    b.cell = np.zeros((3, 3))
    for x in (a, b):
        x.calc = SinglePointCalculator(x, energy=-1.0, forces=np.zeros((2, 3)),
                                       stress=np.zeros(6) if x.pbc.all() else None)
    report = validate([a, b], {"checks": {"volume_per_atom": {"enabled": False}}})
    assert report.values["min_distance"][0] == pytest.approx(0.4, abs=1e-9)  # across the boundary
    assert report.values["min_distance"][1] == pytest.approx(9.6, abs=1e-9) or np.isinf(
        report.values["min_distance"][1]
    )
    assert report.flagged_indices("min_distance") == [0]


def test_net_force_is_zero_for_emt_and_per_atom_option(clean):
    report = validate(clean)
    assert np.nanmax(report.values["net_force"]) < 1e-8  # EMT is conservative
    ds = _copy(clean)
    plant_net_force(ds)  # |sum F| = 0.2 * 32 atoms = 6.4 eV/A
    assert validate(ds).values["net_force"][PLANT] == pytest.approx(0.2 * len(ds[PLANT]), rel=1e-6)
    per_atom = validate(ds, {"checks": {"net_force": {"per_atom": True, "max": 0.1}}})
    assert per_atom.values["net_force"][PLANT] == pytest.approx(0.2, rel=1e-6)
    assert per_atom.flagged_indices("net_force") == [PLANT]


def test_energy_in_wrong_units_is_an_outlier(clean):
    ds = _copy(clean)
    k = 12  # an Ag13 cluster: EMT energies of bulk Cu/Al are ~0 eV, the cluster's are not
    assert ds[k].info["provenance"]["source"] == "cluster:Ag-ico13"
    assert abs(_results(ds[k])["energy"]) / len(ds[k]) > 0.1
    _results(ds[k])["energy"] *= 23.06  # kcal/mol mistaken for eV
    assert validate(ds).flagged_indices("energy_outlier") == [k]


def test_absurd_energy_magnitude_is_a_sentinel(clean):
    ds = _copy(clean)
    _results(ds[PLANT])["energy"] = 1e10
    report = validate(ds)
    assert PLANT in report.flagged_indices("sentinel_energy")
    # the sentinel is left out of the reference fit, so it does not make others outliers
    assert report.flagged_indices("energy_outlier") == []


def test_report_rows_and_dict(clean):
    ds = _copy(clean)
    plant_max_force(ds)
    report = validate(ds, {"checks": {"stress": False}})
    rows = {r["check"]: r for r in report.rows()}
    assert rows["max_force"]["flagged"] == 1 and rows["max_force"]["worst"] == pytest.approx(80.0)
    assert rows["stress"]["enabled"] is False
    d = report.to_dict()
    assert d["counts"]["max_force"] == 1 and d["flagged_indices"]["max_force"] == [PLANT]
    assert "max_force" in report.summary()


# -- bad input ----------------------------------------------------------------------------------


def _one_line(err) -> bool:
    return "\n" not in str(err) and len(str(err)) > 10


def test_empty_dataset_is_a_one_line_error():
    with pytest.raises(DatasetError, match="empty") as err:
        validate([])
    assert _one_line(err.value)


def test_missing_labels_is_a_one_line_error():
    a = emt_dataset(("bulk:Cu-fcc",), n_per_source=2)
    for x in a:
        x.calc = None
    with pytest.raises(DatasetError, match="no energy labels") as err:
        validate(a)
    assert _one_line(err.value)


def test_missing_file_is_a_one_line_error(tmp_path):
    with pytest.raises(DatasetError, match="not found") as err:
        validate(tmp_path / "nope.h5")
    assert _one_line(err.value)


def test_single_structure_and_single_element():
    one = emt_dataset(("bulk:Cu-fcc",), n_per_source=1)
    report = validate(one)
    assert report.n_flagged == 0
    assert any("energy_outlier" in n for n in report.notes)


@pytest.mark.parametrize(
    "section, match",
    [
        ({"checks": {"nan_check": {}}}, "quality.checks: unknown key 'nan_check'; allowed: finite, "),
        ({"checks": {"max_forse": {}}}, r"quality.checks: unknown key 'max_forse' \(did you mean 'max_force'\?\)"),
        ({"checks": ["finite", "bogus"]}, "quality.checks: unknown key 'bogus'; allowed: "),
        ({"checks": {"max_force": {"maximum": 3}}}, r"max_force: unknown key 'maximum' \(did you mean 'max'\?\)"),
        ({"checks": {"max_force": {"max": "big"}}}, "max_force.max must be a number"),
        ({"checks": {"volume_per_atom": {"min": 50, "max": 10}}}, "min must be below max"),
        ({"gates": {"2k": {}}}, "quality.gates: unknown key '2k'; allowed: 1k, 10k, full"),
        ({"gates": {"10K": {}}}, r"quality.gates: unknown key '10K' \(did you mean '10k'\?\); allowed: 1k, 10k, full"),
        ({"gates": {"1k": {"min_score": 0.1}}}, "gates.1k: unknown key 'min_score'"),
        ({"diversity": {"subsample": 10}}, "unknown key 'subsample'"),
        ({"diversity": {"subsample_atoms": 3}}, "subsample_atoms = 3 is invalid: must be >= 10"),
        ({"monitor": {"max_failure_rate": -1}}, "must be >= 0"),
        ({"colour": "red"}, "unknown key 'colour'"),
    ],
)
def test_config_errors_name_the_field(section, match):
    with pytest.raises(ConfigError, match=match) as err:
        QualityConfig.from_dict(section)
    assert _one_line(err.value)


def test_config_list_form_and_yaml(tmp_path):
    cfg = QualityConfig.from_dict({"checks": ["finite", "max_force"]})
    assert cfg.enabled("finite") and cfg.enabled("max_force") and not cfg.enabled("stress")
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "name: x\nquality:\n  checks:\n    max_force: {max: 10}\n  gates:\n    1k: {min_diversity_score: null}\n"
    )
    cfg = QualityConfig.from_yaml(recipe)
    assert cfg.checks["max_force"]["max"] == 10.0 and cfg.gates["1k"]["min_diversity_score"] is None
    bad = tmp_path / "bad.yaml"
    bad.write_text("quality:\n  checks:\n    typo_check: {}\n")
    with pytest.raises(ConfigError, match="typo_check"):
        QualityConfig.from_yaml(bad)


def test_robust_element_fit_ignores_a_wild_energy():
    from mlff_distiller.data.normalization import fit_element_energies, robust_element_fit

    rng = np.random.default_rng(0)
    refs = {1: -3.4, 8: -5.1, 29: -4.0}
    nums = [rng.choice([1, 8, 29], size=int(rng.integers(3, 12))) for _ in range(40)]
    nums += [np.array([29] * 8) for _ in range(4)]  # Cu also in a few pure structures
    e = np.array([sum(refs[int(z)] for z in x) for x in nums]) + rng.normal(0, 1e-3, len(nums))
    clean = robust_element_fit(nums, e)
    assert all(abs(clean[z] - refs[z]) < 5e-3 for z in refs)
    e[-1] += 50.0  # one wild energy
    robust, lsq = robust_element_fit(nums, e), fit_element_energies(nums, e)
    assert all(abs(robust[z] - refs[z]) < 5e-3 for z in refs)
    assert max(abs(lsq[z] - refs[z]) for z in refs) > 0.1  # least squares is dragged


def test_high_energy_samplers_are_exempt_from_high_outliers(clean):
    ds = _copy(clean)
    plant_energy_outlier(ds)
    ds[PLANT].info["provenance"]["sampler"] = "high_energy"
    assert validate(ds).flagged_indices("energy_outlier") == []
    strict = validate(ds, {"checks": {"energy_outlier": {"exempt_high_energy": False}}})
    assert strict.flagged_indices("energy_outlier") == [PLANT]
    _results(ds[PLANT])["energy"] -= 4.0 * len(ds[PLANT])  # now 2 eV/atom too low: still flagged
    assert validate(ds).flagged_indices("energy_outlier") == [PLANT]


def test_net_force_skipped_for_a_direct_force_teacher(clean):
    from mlff_distiller.quality._data import load_records

    ds = _copy(clean)
    plant_net_force(ds)
    rec = load_records(ds)
    rec.attrs = {"teacher_capabilities": {"conservative_forces": False}}
    report = validate(rec)
    assert "net_force" not in report.flags and any("net_force skipped" in n for n in report.notes)
    assert {r["check"]: r["enabled"] for r in report.rows()}["net_force"] is False
    rec.attrs = {"teacher_capabilities": {"conservative_forces": True}}
    assert validate(rec).flagged_indices("net_force") == [PLANT]


def test_misshaped_label_in_an_atoms_list_is_named():
    from ase.build import bulk

    good = bulk("Cu", "fcc", a=3.6) * (2, 2, 2)
    good.calc = SinglePointCalculator(good, energy=-1.0, forces=np.zeros((len(good), 3)))
    bad = good.copy()
    bad.calc = SinglePointCalculator(bad, energy=-1.0, forces=np.zeros((len(bad) - 1, 3)))
    with pytest.raises(DatasetError, match=r"item 1 has forces of shape \(7, 3\), expected \(8, 3\)"):
        validate([good, bad])
