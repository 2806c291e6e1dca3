"""Key numbers of README.md and docs/*.md against the committed results in benchmarks/results/.

A results file that is re-run (or a README edited by hand) without the other being updated
fails here, so a measured number in the docs cannot go stale silently. Fast: reads JSON only.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
README = (ROOT / "README.md").read_text()


def _json(name: str):
    return json.loads((RESULTS / name).read_text())


def _fmt(value: float, digits: int) -> str:
    return f"{value:.{digits}f}"


def _md_ratio(bench: dict, system: str) -> float:
    return bench["systems"][system]["speed"]["ratio"]["md_step"]


def _paired(d: dict, scale: float = 1.0, digits: int = 3) -> str:
    """A paired difference as the results print it: '+0.004 [+0.003, +0.005]' (signed)."""
    lo, hi = d["ci95"]
    return f"{scale * d['difference']:+.{digits}f} [{scale * lo:+.{digits}f}, {scale * hi:+.{digits}f}]"


def test_verdict_table_matches_the_held_out_md_results():
    # the current recipes' end-to-end runs (silicon_recipe_e2e/current/, quickstart_e2e/, water_recipe_30min/cuts/)
    for recipe, folder in (("silicon", "silicon_recipe_e2e/current"), ("quickstart", "quickstart_e2e"),
                           ("water", "water_recipe_30min/cuts")):
        pooled = _json(f"{folder}/bench.json")["heldout"]["pooled"]
        lo, hi = pooled["force_rel_rmse_ci95"]
        cell = f"{pooled['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]"
        row = next(line for line in README.splitlines() if line.startswith(f"| `{recipe}`"))
        assert cell in row, (recipe, cell, row)
        mev = pooled["energy_mae_per_atom"] * 1000
        assert f"{mev:.3g} meV/atom" in row, (recipe, mev, row)


def test_speed_ratios_of_the_current_student():
    rows = {}
    for teacher in ("bench_chgnet", "bench_orb_v2_random"):
        bench = _json(f"speed_after_defaults/{teacher}/bench.json")
        rows[teacher] = [_md_ratio(bench, s) for s in ("aspirin", "si-64", "si-512")]
    chg = " / ".join(f"{r:.1f}x" for r in rows["bench_chgnet"])
    orb = " / ".join(f"{r:.1f}x" for r in rows["bench_orb_v2_random"])
    assert f"{chg} faster than CHGNet" in README.replace("\n", " "), chg
    assert f"{orb} faster than the Orb-v2 architecture" in README.replace("\n", " "), orb
    table = "aspirin {:.1f}x, Si-64 {:.1f}x, Si-512 {:.1f}x".format(*rows["bench_chgnet"])
    assert table in README, table


def test_stage_benchmark_rows():
    store = _json("dataset_store.json")["size_ratio"]
    assert f"{store['numpy_over_store']:.2f}x smaller (lossless default)" in README
    assert f"{store['numpy_over_store_compact']:.2f}x with the opt-in compact layout" in README
    extxyz = store["extxyz_over_store"], store["extxyz_over_store_f32pos"]
    assert "| {:.2f}x (default: not met); {:.2f}x float32".format(*extxyz) in README
    ratio = (RESULTS / "store_ratio.md").read_text()
    assert "| **3.000x** |" in ratio and "| 2.529x |" in ratio and "| 2.427x |" in ratio
    assert "| 3.00x (`tiny` x 1000, EMT; format 2: 2.53x" in README and "2.43x on a 120-structure water set" in README
    lab = {r["teacher"].split("-")[0]: r for r in _json("labeling.json")}
    row = next(line for line in README.splitlines() if line.startswith("| labeling: pipeline vs bare"))
    assert f"{lab['chgnet']['pipeline_over_bare']:.2f} (CHGNet" in row
    assert f"{lab['emt']['pipeline_over_bare']:.2f} (EMT" in row
    row = next(line for line in README.splitlines() if line.startswith("| labeling: 2 workers vs 1"))
    assert f"{lab['chgnet']['two_over_one_worker']:.2f}x (CHGNet)" in row
    assert f"{lab['emt']['two_over_one_worker']:.2f}x (EMT)" in row


def test_labeling_doc_table_matches_the_results():
    text = (ROOT / "docs" / "labeling.md").read_text()
    lab = {r["teacher"].split("-")[0]: r for r in _json("labeling.json")}
    row = next(line for line in text.splitlines() if line.startswith("| 2 workers / 1 worker"))
    assert f"| {lab['chgnet']['two_over_one_worker']:.2f}x | {lab['emt']['two_over_one_worker']:.2f}x |" in row, row
    row = next(line for line in text.splitlines() if line.startswith("| pipeline, 1 worker / bare"))
    assert f"| {lab['chgnet']['pipeline_over_bare']:.2f} | {lab['emt']['pipeline_over_bare']:.2f} |" in row, row


def test_summary_lines_quoted_in_readme_exist_in_the_summaries():
    qs = (RESULTS / "quickstart_summary.md").read_text()
    for text in ("force RMSE / teacher RMS 0.193 [0.186, 0.198]", "energy MAE 9.5 meV/atom", "57.48x per MD step",
                 "62.31x per MD step", "44.82x per MD step", "labelled 1240, failed 0",
                 "energy MAE 28.9 meV/atom, force MAE 135 meV/A, force RMSE / teacher RMS 0.248"):
        assert text in qs, text
    assert "57.5x / 62.3x / 44.8x" in README and "0.248 and 28.9" in README
    old = (RESULTS / "quickstart_800" / "summary.md").read_text()  # the 800-structure recipe's last run
    assert "labelled 800, failed 0" in old and "best epoch 74 of 75" in old
    si = (RESULTS / "silicon" / "summary.md").read_text()
    assert "44.47x per MD step" in si and "44.5x (Si-64)" in README


@pytest.mark.parametrize("doc", sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"], ids=lambda p: p.name)
def test_docs_cite_only_files_in_the_repository(doc):
    """Every benchmarks/results/... path a doc names exists (a renamed results file breaks the link)."""
    text = doc.read_text()
    for m in re.finditer(r"benchmarks/results/([\w./-]+)", text):
        rel = m.group(1).rstrip(".)")
        assert (RESULTS / rel).exists(), f"{doc.name} cites benchmarks/results/{rel}, which is not committed"


def test_training_doc_table_matches_the_quickstart_summary():
    qs = (RESULTS / "quickstart_800" / "summary.md").read_text()
    m = re.search(r"energy_mae_per_atom = ([\d.]+), .*force_rel_rmse = ([\d.]+)", qs)
    e_mev, f_rel = float(m.group(1)) * 1000, float(m.group(2))
    row = next(line for line in (ROOT / "docs" / "training.md").read_text().splitlines()
               if line.startswith("| the same, final stage energy 100"))
    cells = re.findall(r"\| ([\d.]+) meV/atom \| ([\d.]+) (?=\|)", row)  # validation, then test split
    (val_e, val_f), (test_e, test_f) = [(float(a), float(b)) for a, b in cells]
    assert val_e == pytest.approx(e_mev, abs=0.051) and val_f == pytest.approx(f_rel, abs=0.00051), row
    acc = _json("quickstart_800/bench.json")["accuracy"]
    assert test_e == pytest.approx(acc["energy_mae_per_atom"] * 1000, abs=0.051), row
    assert test_f == pytest.approx(acc["force_rmse_relative"], abs=0.00051), row


def test_student_step_over_neighbour_list_ranges():
    """README's calculator-step / neighbour-list ranges (Numba backend) from student.json."""
    systems = _json("student.json")["systems"].values()

    def span(variant: str) -> str:
        r = [s["ms"][f"{variant}/numba"] / s["ms"]["NL"] for s in systems]
        return f"{min(r):.0f}-{max(r):.0f}x"

    row = next(line for line in README.splitlines() if line.startswith("| student calculator step / vesin"))
    for label, variant in (("small (default)", "small+sl"), ("tiny", "tiny+sl"), ("quickstart student", "small-2L+sl"),
                           ("base", "base+sl")):
        assert f"{label} {span(variant)}" in row, (label, span(variant), row)


def test_active_vs_random_table_matches_the_results():
    res = json.loads((RESULTS / "water_active" / "active_vs_random.json").read_text())
    rows = {"first student": "S0", "+ 2 active rounds": "active", "+ 88 random recipe structures": "random x1",
            "+ 176 random recipe structures": "random x2"}
    doc = (ROOT / "docs" / "active.md").read_text()
    for label, name in rows.items():
        p = res["heldout"]["students"][name]["pooled"]
        lo, hi = p["force_rel_rmse_ci95"]
        force = f"{p['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]"
        row = next(line for line in README.splitlines() if line.startswith(f"| {label} |"))
        assert f"| {res['teacher_calls'][name]} |" in row and force in row.replace("**", ""), row
        assert f"{1e3 * p['energy_mae_per_atom']:.1f} meV/atom" in row, row
        assert force in doc.replace("**", ""), name
    diff = res["heldout"]["students"]["random x2"]["vs_active"]["force_rel_rmse"]
    flat = " ".join(README.split())
    assert f"+{diff['difference']:.3f} [+{diff['ci95'][0]:.3f}, +{diff['ci95'][1]:.3f}]" in flat
    refit = json.loads((RESULTS / "water_active" / "reference_refit.json").read_text())["students"]
    after = 1e3 * refit["active, reference refit"]["pooled"]["energy_mae_per_atom"]
    before = 1e3 * refit["active"]["pooled"]["energy_mae_per_atom"]
    assert f"that gives {after:.1f} meV/atom with unchanged forces" in flat
    assert f"energy MAE {before:.1f} -> {after:.1f} meV/atom with unchanged forces" in " ".join(doc.split())


def test_silicon_100ps_claim_matches_the_runs():
    runs = json.loads((RESULTS / "silicon" / "si_100ps.json").read_text())["runs"]
    assert len(runs) == 2 and all(r["stable"] and r["simulated_ps"] == 100.0 and r["temperature_K"] == 1800.0
                                  for r in runs)
    flat = " ".join(README.split())
    assert "and two separate 100 ps runs at 1800 K (2 of 2 stable" in flat  # the previous silicon student
    assert f"closest pair {min(r['closest_pair_A'] for r in runs):.2f} A" in flat


def test_refit_in_the_loop_numbers_match_the_results():
    res = json.loads((RESULTS / "water_active" / "refit_in_the_loop.json").read_text())["students"]
    p = res["active, refit in the loop"]["pooled"]
    d = res["random x2"]["vs_active, refit in the loop"]["force_rel_rmse"]
    flat = " ".join(README.split())
    assert f"give {1e3 * p['energy_mae_per_atom']:.1f} meV/atom and force {p['force_rel_rmse']:.3f}" in flat
    assert f"random x2 still +{d['difference']:.3f} [+{d['ci95'][0]:.3f}, +{d['ci95'][1]:.3f}] worse" in flat


def _pooled_row(p: dict) -> tuple[str, str]:
    lo, hi = p["force_rel_rmse_ci95"]
    return f"{p['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]", f"{1e3 * p['energy_mae_per_atom']:.1f} meV/atom"


def test_forces_only_active_rounds_match_the_results():
    res = _json("water_active/forces_only_in_the_loop.json")["students"]
    force, energy = _pooled_row(res["active, forces only"]["pooled"])
    row = next(line for line in README.splitlines() if line.startswith("| + 2 active rounds, added frames"))
    assert force in row.replace("**", "") and energy in row.replace("**", ""), row
    d = res["random x2"]["vs_active, forces only"]
    flat = " ".join(README.split())
    de, df = d["energy_mae_per_atom"], d["force_rel_rmse"]
    assert (f"random x2 +{1e3 * de['difference']:.1f} [+{1e3 * de['ci95'][0]:.1f}, +{1e3 * de['ci95'][1]:.1f}] "
            f"meV/atom and +{df['difference']:.3f} [+{df['ci95'][0]:.3f}, +{df['ci95'][1]:.3f}] in force") in flat
    p = res["active, forces only"]["pooled"]
    assert f"give **{1e3 * p['energy_mae_per_atom']:.1f} meV/atom and force {p['force_rel_rmse']:.3f}**" in flat
    skip = _json("water_active/energy_skip.json")["students"]
    masked, full = (1e3 * skip[k]["pooled"]["energy_mae_per_atom"] for k in ("masked", "full"))
    assert f"gives {masked:.1f} instead of {full:.1f} meV/atom" in flat


def test_silicon_active_vs_random_table_matches_the_results():
    res = _json("silicon_active/heldout_comparison.json")["students"]
    rows = {"first student": "S0", "+ 2 active rounds": "active", "+ 72 random recipe structures": "random x1",
            "+ 144 random recipe structures": "random x2"}
    table = README[README.index("| silicon student |"):]
    for label, name in rows.items():
        force, energy = _pooled_row(res[name]["pooled"])
        row = next(line for line in table.splitlines() if line.startswith(f"| {label} |"))
        assert force in row.replace("**", "") and energy in row, (row, force, energy)
    d = res["random x2"]["vs_active"]["force_rel_rmse"]
    flat = " ".join(README.split())
    assert f"random x2 +{d['difference']:.3f} [+{d['ci95'][0]:.3f}, +{d['ci95'][1]:.3f}] worse" in flat


def test_learning_curve_tables_match_the_results():
    res = _json("learning_curves_silicon.json")
    section = README[README.index("### Learning curves (silicon"):]
    for key, col in (("vs_data", "structures"), ("vs_steps", "steps")):
        for r in res[key]:
            force, energy = _pooled_row(r["teacher MD"])
            test, _ = _pooled_row(r["test split"])
            row = next(line for line in section.splitlines() if line.startswith(f"| {r[col]} |"))
            assert force in row and energy in row and test in row, (row, force, energy, test)
    d = [r["teacher MD_vs_previous"]["force_rel_rmse"]["difference"] for r in res["vs_data"][2:]]
    flat = " ".join(section.split())
    assert f"paired +{d[0]:.3f} and +{d[1]:.3f} per doubling" in flat
    last = res["vs_steps"][-1]["teacher MD_vs_previous"]["force_rel_rmse"]
    assert f"paired +{last['difference']:.3f} [+{last['ci95'][0]:.3f}, +{last['ci95'][1]:.3f}]" in flat
    committed = _json("silicon/final_stage_and_steps.json")["students"]
    old = next(v for k, v in committed.items() if k.startswith("committed"))["pooled"]["force_rel_rmse"]
    assert f"at {old:.3f} on them" in flat


def test_silicon_kind_share_numbers_match_the_results():
    res = _json("silicon_active/kind_share.json")["students"]
    capped = res["active, kind share 0.34"]
    force, energy = _pooled_row(capped["pooled"])
    table = README[README.index("| silicon student |"):]
    row = next(line for line in table.splitlines() if line.startswith("| + 2 active rounds, forces only, each"))
    assert force in row.replace("**", "") and energy in row, (row, force, energy)
    d = res["active, no cap"]["vs_active, kind share 0.34"]
    de, df = d["energy_mae_per_atom"], d["force_rel_rmse"]
    # the README states the cap's effect from the capped arm's side (the file's sign, flipped)
    flat = " ".join(README.split())
    assert (f"-{1e3 * de['difference']:.1f} [-{1e3 * de['ci95'][1]:.1f}, -{1e3 * de['ci95'][0]:.1f}] meV/atom and "
            f"-{df['difference']:.3f} [-{df['ci95'][1]:.3f}, -{df['ci95'][0]:.3f}] in force") in flat
    slab = capped["per_run"]["si-slab@1800K"]
    assert f"-{-1e3 * slab['energy_offset_per_atom']:.1f} meV/atom offset" in flat
    docs = (ROOT / "docs" / "active.md").read_text()
    assert f"| active, `max_kind_share: 0.34` | **{capped['pooled']['force_rel_rmse']:.3f}** |" in docs


def test_silicon_stability_numbers_match_the_results():
    runs = {r["student"]: r for r in _json("silicon_active/stability_100ps.json")["runs"]}
    assert all(r["stable"] and r["simulated_ps"] == pytest.approx(100.0) for r in runs.values())
    flat = " ".join(README.split())
    assert (f"closest pairs {runs['s0']['closest_pair_A']:.2f} and {runs['active-r2']['closest_pair_A']:.2f} A"
            in flat)


def test_silicon_liquid_numbers_match_the_results():
    res = _json("silicon/liquid_data.json")["students"]
    liquid = res["8000 steps + liquid"]
    force, _ = _pooled_row(liquid["pooled"])
    flat = " ".join(README.split())
    assert f"force {force} and energy {1e3 * liquid['pooled']['energy_mae_per_atom']:.2f} meV/atom" in flat
    d = liquid["vs_4000 steps"]
    df, de = d["force_rel_rmse"], d["energy_mae_per_atom"]
    mev = [-1e3 * de["difference"], -1e3 * de["ci95"][0], -1e3 * de["ci95"][1]]
    assert (f"-{-df['difference']:.3f} [-{-df['ci95'][0]:.3f}, -{-df['ci95'][1]:.3f}] in force, "
            f"-{mev[0]:.1f} [-{mev[1]:.1f}, -{mev[2]:.1f}] meV/atom") in flat
    cover = _json("silicon/pair_coverage.json")["students"]
    assert f"(worst atom {cover['8000 steps + liquid']['max_atom_error_eV_per_A']:.2f} eV/A)" in flat
    assert f"up to {cover['8000 steps']['max_atom_error_eV_per_A']:.0f} eV/A" in flat


def test_silicon_recipe_liquid_numbers_match_the_results():
    res = _json("silicon/recipe_liquid.json")["students"]
    new, old = res["built-in recipe now"], res["4000 steps (previous recipe)"]
    flat = " ".join(README.split())
    lo, hi = new["pooled"]["force_rel_rmse_ci95"]
    assert f"0.167 [{lo:.3f}, {hi:.3f}]" in flat and f"{new['pooled']['force_rel_rmse']:.3f}" == "0.167"
    assert f"{1e3 * new['pooled']['energy_mae_per_atom']:.2f} meV/atom" in flat
    d = new["vs_4000 steps (previous recipe)"]
    f, e = d["force_rel_rmse"], d["energy_mae_per_atom"]
    assert _paired(f) in flat
    assert f"{_paired(e, 1e3, 1)} meV/atom" in flat
    assert f"{1e3 * old['pooled']['energy_mae_per_atom']:.2f}" == "7.67"


def test_silicon_blowup_claim_matches_the_replay():
    res = _json("silicon/blowup_1800K.json")
    assert res["run"]["status"] == "exploded" and res["run"]["n_steps"] == 4704
    bench = _json("silicon/bench.json")
    assert bench["systems"]["si-64"]["md"]["stability"]["student"][0]["n_steps"] == 4704
    last = res["frames"][-1]
    assert f"a pair closes to {last['closest_pair_A']:.2f} A" in " ".join(README.split())
    diffs = [r["energy_diff_mev_per_atom"] for r in res["frames"][:-1]]
    assert -11 < max(diffs) < -10 and round(min(diffs)) == -68  # README: "10-68 meV/atom below"


def test_silicon_active_round_on_the_liquid_recipe_matches_the_results():
    stab = _json("silicon_active/liquid_recipe_round1/stability_100ps.json")
    runs = {r["student"].split(" ")[0]: r for r in stab["runs"]}
    assert not runs["S0"]["stable"] and runs["S0"]["n_steps"] == 4704
    assert runs["S1"]["stable"] and runs["S1"]["simulated_ps"] == 100.0
    flat = " ".join(README.split())
    assert f"survives 100 ps at 1800 K (seed 0; closest pair {runs['S1']['closest_pair_A']:.2f} A)" in flat
    res = _json("silicon_active/liquid_recipe_round1/heldout_300.json")["students"]
    s0, s1 = res["S0 built-in recipe"]["pooled"], res["S1 +1 active round"]["pooled"]
    d = res["S1 +1 active round"]["vs_S0 built-in recipe"]["force_rel_rmse"]
    assert _paired(d) in flat
    assert f"({s0['force_rel_rmse']:.3f} -> {s1['force_rel_rmse']:.3f})" in flat
    assert f"({1e3 * s0['energy_mae_per_atom']:.2f} -> {1e3 * s1['energy_mae_per_atom']:.2f})" in flat


def test_quickstart_end_to_end_run_matches_the_readme():
    """The 11.9 min run: its stage times, gate and speed ratios as the README and its results page say."""
    stages = _json("quickstart_e2e/stage_seconds.json")
    total = sum(v["seconds"] for v in stages.values())
    flat = " ".join(README.split())
    assert f"took {total:.0f} s over its stages" in flat
    for name, label in (("generate:all", "generate"), ("label:all", "label"), ("train", "train"), ("bench", "bench")):
        assert f"{label} {stages[name]['seconds']:.0f} s" in flat, name
    timed = (RESULTS / "quickstart_e2e" / "time_v.txt").read_text()
    m, sec = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\d+):([\d.]+)", timed).groups()
    wall = 60 * int(m) + float(sec)
    assert total <= wall < 15 * 60 and f"{wall / 60:.1f} min" in flat
    bench = _json("quickstart_e2e/bench.json")
    assert bench["verdict"]["passed"] is True
    ratios = " / ".join(f"{_md_ratio(bench, s):.1f}x" for s in ("aspirin", "si-64", "si-512"))
    assert ratios in flat, ratios
    page = " ".join((RESULTS / "quickstart_e2e" / "README.md").read_text().split())
    assert f"**{total:.1f}**" in page and ratios in page and f"{wall / 60:.1f} min" in page
    # the clean-clone make demo: its stages, wall time and (deterministic) held-out numbers
    clone = _json("quickstart_e2e/clean_clone/stage_seconds.json")
    clone_total = sum(v["seconds"] for v in clone.values())
    assert f"{clone_total:.0f} s ({clone_total / 60:.1f} min) of stages" in flat
    timed = (RESULTS / "quickstart_e2e" / "clean_clone" / "time_v.txt").read_text()
    m, sec = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\d+):([\d.]+)", timed).groups()
    assert f"took {m} min {float(sec):.0f} s" in flat
    assert _json("quickstart_e2e/clean_clone/bench.json")["heldout"]["pooled"] == bench["heldout"]["pooled"]
    assert "rc=0" in (RESULTS / "quickstart_e2e" / "clean_clone" / "terminal.log").read_text()


def test_quickstart_clean_clone_paragraph_matches_its_run():
    pooled = _json("quickstart_clean_clone/bench.json")["heldout"]["pooled"]
    lo, hi = pooled["force_rel_rmse_ci95"]
    flat = " ".join(README.split())
    assert f"force {pooled['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}] and energy " \
           f"{1e3 * pooled['energy_mae_per_atom']:.1f} meV/atom" in flat
    stages = _json("quickstart_clean_clone/stage_seconds.json")
    assert f"generate {stages['generate:all']['seconds']:.0f} s" in flat
    assert "Accuracy gate GO" in (RESULTS / "quickstart_clean_clone" / "summary.md").read_text()


def test_silicon_capacity_numbers_match_the_results():
    def signed(x: float) -> str:
        return f"{x:+.3f}"

    flat = " ".join(README.split())
    cap = " ".join((RESULTS / "silicon_capacity" / "README.md").read_text().split())
    for name, label in (("3L", "3 layers"), ("2L-96", "96 features")):
        d = _json("silicon_capacity/heldout300.json")["students"][name]["vs_2L"]
        df, de = d["force_rel_rmse"], d["energy_mae_per_atom"]
        cell = f"{signed(df['difference'])} [{signed(df['ci95'][0])}, {signed(df['ci95'][1])}]"
        assert f"{label}: force {cell}, energy {1e3 * de['difference']:+.1f} meV/atom" in flat, (name, cell)
        assert f"| {name} |" in cap and cell in cap
    base = _json("silicon_capacity/heldout90.json")["students"]["2L"]["pooled"]
    lo, hi = base["force_rel_rmse_ci95"]
    assert f"force {base['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}] on the bench's 90 frames" in flat
    # the recipe's retrained student equals the committed first-round student of silicon/
    first = _json("silicon/bench.json")["heldout"]["pooled"]
    assert abs(first["force_rel_rmse"] - base["force_rel_rmse"]) < 1e-6
    assert abs(first["energy_mae_per_atom"] - base["energy_mae_per_atom"]) < 1e-6


def test_parallel_ceiling_matches_the_results():
    """The README's ceiling for the generation row: the one-backward control's two rounds."""
    ratios = sorted(r["ratio"] for r in _json("parallel_ceiling_one_backward.json")["rounds"])
    assert f"two independent single-thread CHGNet loops reach {ratios[0]:.2f}-{ratios[-1]:.2f}x" in README


def test_silicon_data_numbers_match_the_results():
    """The README's 'Which data helps' list and silicon_data/README.md quote heldout600/heldout90."""
    flat = " ".join(README.split())
    data = " ".join((RESULTS / "silicon_data" / "README.md").read_text().split())
    h600 = _json("silicon_data/heldout600.json")["students"]
    h90 = _json("silicon_data/heldout90.json")["students"]
    for name in ("2L-seed1", "+same", "+thermal", "+hot", "+both"):
        d = h600[name]["vs_2L"]["force_rel_rmse"]
        cell = _paired(d)
        assert cell in flat and cell in data, (name, cell)
    assert f"from {h90['2L']['pooled']['force_rel_rmse']:.3f} to {h90['+thermal']['pooled']['force_rel_rmse']:.3f}" \
        in flat
    assert f"{h90['+hot']['pooled']['force_rel_rmse']:.3f} on the bench's 90 frames" in flat
    slab = [h600[n]["per_run"][k]["force_rel_rmse"] for n in ("2L", "+thermal")
            for k in ("si-slab@600K", "si-slab@600K#1")]
    assert "from {:.3f} / {:.3f} to {:.3f} / {:.3f}".format(*slab) in flat
    # the 90-frame students are the 600-frame ones, and 2L is the capacity study's recipe student
    assert abs(h90["2L"]["pooled"]["force_rel_rmse"]
               - _json("silicon_capacity/heldout90.json")["students"]["2L"]["pooled"]["force_rel_rmse"]) < 1e-9


def test_silicon_recipe_thermal_numbers_match_the_results():
    """The README's silicon section and silicon_recipe_thermal/README.md quote its comparisons."""
    flat = " ".join(README.split())
    doc = " ".join((RESULTS / "silicon_recipe_thermal" / "README.md").read_text().split())
    h600 = _json("silicon_recipe_thermal/heldout600.json")["students"]
    h90 = _json("silicon_recipe_thermal/heldout90.json")["students"]
    bench = _json("silicon_recipe_thermal/bench.json")["heldout"]["pooled"]
    for name, where in (("first-round", (flat, doc)), ("final", (flat, doc)), ("round-1", (doc,))):
        d = h600[name]["vs_2L"]["force_rel_rmse"]
        cell = _paired(d)
        assert all(cell in text for text in where), (name, cell)
        assert _paired(h90[name]["vs_2L"]["force_rel_rmse"]) in doc, name
    # the bench's own 90 frames and the 90-frame comparison score the same final student
    assert abs(h90["final"]["pooled"]["force_rel_rmse"] - bench["force_rel_rmse"]) < 1e-9
    slab = [h600[n]["per_run"][k]["force_rel_rmse"] for n in ("2L", "first-round")
            for k in ("si-slab@600K", "si-slab@600K#1")]
    assert "{:.3f} / {:.3f} to {:.3f} / {:.3f}".format(*slab) in flat
    seconds = _json("silicon_recipe_thermal/stage_seconds.json")
    total = sum(v["seconds"] for v in seconds.values())
    assert f"{total:.0f} ({total / 60:.0f} min)" in doc
    fe = _json("silicon_recipe_thermal/fit_active_energies600.json")["students"]["fe-final"]["vs_final"]
    d = fe["force_rel_rmse"]
    assert f"| {_paired(d)} |" in doc
    assert _paired(fe["energy_mae_per_atom"], 1e3, 1) in doc
    s1 = _json("silicon_recipe_thermal/seeds600.json")["students"]["first-round-seed1"]["vs_2L-seed1"]["force_rel_rmse"]
    assert f"| {_paired(s1)} |" in doc


def test_restructuring_quickstart_ab_matches_its_metrics():
    """restructuring_quickstart_ab.md section 4: the reverted code's metrics.csv equals 6a348c1's in
    every column but elapsed_s; the current code's training columns are equal and its validation
    columns within the stated 2.9e-5 relative."""
    import csv

    d = RESULTS / "restructuring_quickstart_ab"

    def rows(name):
        with open(d / name) as fh:
            return [{k: v for k, v in r.items() if k != "elapsed_s"} for r in csv.DictReader(fh)]

    old, rev, new = (rows(f"metrics_{t}.csv") for t in ("6a348c1", "ad3af40_ema_reverted", "ad3af40"))
    assert len(old) == len(rev) == len(new) == 49 and old[-1]["step"] == "3000"
    assert rev == old
    same = ("epoch", "step", "lr", "train_loss", "best")
    assert [[r[k] for k in same] for r in new] == [[r[k] for k in same] for r in old]
    rel = max(abs(float(a[k]) - float(b[k])) / abs(float(a[k])) for a, b in zip(old, new) for k in a
              if k.startswith("val_"))
    assert 0 < rel <= 2.9e-5
    text = (RESULTS / "restructuring_quickstart_ab.md").read_text()
    assert "at most 2.9e-5" in text and "all 49 rows" in text
    held = _json("restructuring_quickstart_ab/heldout.json")["students"]
    old_p, rev_p, new_p = (held[k]["pooled"] for k in ("6a348c1", "ad3af40-ema-reverted", "ad3af40"))
    assert rev_p == old_p and _fmt(new_p["force_rel_rmse"], 3) == _fmt(old_p["force_rel_rmse"], 3) == "0.193"
    assert _fmt(1000 * new_p["energy_mae_per_atom"], 2) == "9.54"


def test_silicon_melt_numbers_match_the_results():
    """README and silicon_melt/README.md: the paired liquid gains at both seeds, the phase table."""
    flat = " ".join(README.split())
    doc = " ".join((RESULTS / "silicon_melt" / "README.md").read_text().split())
    for name, ref, f600, f90 in (("+liquid", "first-round", "cmp600_s0", "cmp90"),
                                 ("+liquid-seed1", "first-round-seed1", "cmp600_s1", "cmp90_s1")):
        d = _json(f"silicon_melt/{f600}.json")["students"][name][f"vs_{ref}"]
        assert _paired(d["force_rel_rmse"]) in flat and _paired(d["force_rel_rmse"]) in doc, name
        assert _paired(d["energy_mae_per_atom"], 1e3, 1) in doc, name
        d90 = _json(f"silicon_melt/{f90}.json")["students"][name][f"vs_{ref}"]
        assert f"| {_paired(d90['force_rel_rmse'])} |" in doc, name
    phase = _json("silicon_melt/coordination.json")["phase"]
    row = [phase[k] for k in ("si-216@1800K", "si-216@1800K#1")]
    assert ("| {:.2f} / {:.2f} | {:.2f} / {:.2f} | {:.2f} / {:.2f} |".format(
        row[0]["fold_fraction_first"], row[1]["fold_fraction_first"], row[0]["fold_fraction_last"],
        row[1]["fold_fraction_last"], row[0]["msd_last_A2"], row[1]["msd_last_A2"]) in doc)
    fit = _json("silicon_melt/fit.json")["students"]["+liquid"]["groups"]
    liquid = [fit["liquid_labels.h5"][f"md {t} K"]["force_rel_rmse"] for t in (2000, 2400)]
    assert "is {:.3f} and {:.3f} (2000 / 2400 K".format(*liquid) in doc
    assert max(liquid) < 0.19 and fit["train.h5"]["md 3000 K"]["force_rel_rmse"] > 0.15  # README: 0.18, 0.16
    cap = _json("silicon_melt/fit_capacity.json")["students"]
    hot = [cap[n]["groups"]["train.h5 (capacity study)"]["md 2500 K"]["force_rel_rmse"] for n in ("2L", "3L")]
    assert "at 2500 K from {:.3f} to {:.3f}".format(*hot) in doc


def test_silicon_angular_numbers_match_the_results():
    """README, docs/student.md and silicon_angular/README.md: the paired angular gain, the pooled
    errors on 600 and 90 frames, the training-set fit and the speed ratios."""
    flat = " ".join(README.split())
    doc = " ".join((RESULTS / "silicon_angular" / "README.md").read_text().split())
    student_doc = " ".join((ROOT / "docs" / "student.md").read_text().split())
    s600 = _json("silicon_angular/heldout600.json")["students"]
    paired = _paired(s600["+liquid+angular"]["vs_+liquid"]["force_rel_rmse"])
    assert paired in flat and paired in doc and paired in student_doc
    base, ang = (s600[n]["pooled"] for n in ("+liquid", "+liquid+angular"))
    assert f"from {base['force_rel_rmse']:.3f} to **{ang['force_rel_rmse']:.3f}**" in flat
    assert f"from {base['force_rel_rmse']:.3f} to {ang['force_rel_rmse']:.3f}" in student_doc
    assert f"| **{1e3 * ang['energy_mae_per_atom']:.2f} [" in doc and f"**{ang['force_rel_rmse']:.4f} [" in doc
    worst = max(r["force_rel_rmse"] for r in s600["+liquid+angular"]["per_run"].values())
    assert f"at or below {worst:.3f}" in flat and f"No run is above {worst:.3f}" in doc
    s90 = _json("silicon_angular/heldout90.json")["students"]
    f90 = [s90[n]["pooled"]["force_rel_rmse"] for n in ("+liquid", "+liquid+angular")]
    assert "from {:.3f} to **{:.3f}**, below the 0.10 target".format(*f90) in flat
    assert f90[1] < 0.10
    fit = _json("silicon_angular/fit.json")["students"]
    liquid = [fit[n]["groups"]["liquid_labels.h5"]["md 2000 K"]["force_rel_rmse"]
              for n in ("+liquid", "+liquid+angular")]
    assert "| {:.3f} / ".format(liquid[0]) in doc and "| {:.3f} / ".format(liquid[1]) in doc
    speed = {(r["teacher"], r["system"]): r["ratio"] for r in _speed_rows("silicon_angular/speed/bench_summary.md")}
    assert f"{speed[('orb_v2_random', 'si-64')]:.0f}x / {speed[('orb_v2_random', 'si-512')]:.0f}x the Orb-v2" in flat
    assert min(v for (t, _), v in speed.items() if t == "orb_v2_random") >= 100.0


def _speed_rows(name: str) -> list[dict]:
    """Rows of an md_profiler bench_summary.md table: teacher, system and speed-up per MD step."""
    rows = []
    for line in (RESULTS / name).read_text().splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) >= 6 and cells[0] in ("chgnet", "orb_v2_random"):
            rows.append({"teacher": cells[0], "system": cells[1], "ratio": float(cells[5].rstrip("x"))})
    return rows



def test_silicon_recipe_stability_claims_match_the_benches():
    """README: the 1800 K runs of both silicon recipes' benches were cut by the wall-clock budget."""
    flat = " ".join(README.split())
    for folder, words in (("silicon_recipe_angular", "ran {:.0f} ps without a blow-up"),
                          ("silicon_recipe_thermal", "the same way, at {:.0f} ps")):
        bench = _json(f"{folder}/bench.json")
        (run,) = bench["systems"]["si-64"]["md"]["stability"]["student"]
        assert run["stable"] and run["status"] == "time_limit", folder
        assert words.format(run["simulated_ps"]) in flat, folder


def test_water_liquid_numbers_match_the_results():
    """README and water_liquid/README: the controlled water study's held-out numbers."""
    res = _json("water_liquid/heldout304.json")
    assert res["n_frames"] == 304 and len(res["runs"]) == 8
    st = res["students"]
    best = st["+angular+liquid"]
    lo, hi = best["pooled"]["force_rel_rmse_ci95"]
    row = f"**{best['pooled']['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]**"
    d = best["vs_recipe"]["force_rel_rmse"]
    paired = f"paired {d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
    assert row in README and paired in README
    assert f"{1e3 * st['recipe']['pooled']['energy_mae_per_atom']:.2f} meV/atom" in README
    assert f"**{1e3 * best['pooled']['energy_mae_per_atom']:.2f} meV/atom**" in README
    assert f"{st['recipe']['pooled']['force_rel_rmse']:.3f} [" in README
    assert f"(paired {st['+angular']['vs_recipe']['force_rel_rmse']['difference']:+.3f})" in README
    assert hi > 0.10 > best["pooled"]["force_rel_rmse"]  # "the interval reaches above it"
    text = (RESULTS / "water_liquid" / "README.md").read_text()
    assert row.strip("*") in text.replace("**", "") and paired.replace("paired ", "") in text
    groups = _json("water_liquid/energy_by_group.json")["groups"]
    held = [groups["held-out teacher MD"][k]["energy_per_atom_mean"] for k in ("water-96@300K", "water-96@300K#1")]
    gap = groups["train.h5"]["O md 300 K"]["energy_per_atom_mean"] - sum(held) / len(held)
    assert round(1e3 * gap) == 92 and "92 meV/atom" in README


def test_water_recipe_end_to_end_numbers_match_the_results():
    """README and water_recipe_liquid/README: the water recipe's end-to-end gate and its student
    on the 304 longer held-out frames."""
    summary = (RESULTS / "water_recipe_liquid" / "summary.md").read_text()
    assert "**Accuracy gate GO:" in summary
    bench = _json("water_recipe_liquid/bench.json")
    pooled = bench["heldout"]["pooled"]
    lo, hi = pooled["force_rel_rmse_ci95"]
    assert hi <= 0.10  # "met" on the recipe's gate
    cell = f"**{pooled['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]**"
    assert cell in README
    res = _json("water_recipe_liquid/heldout304.json")
    assert res["n_frames"] == 304
    e2e = res["students"]["end_to_end"]
    lo, hi = e2e["pooled"]["force_rel_rmse_ci95"]
    big = f"{e2e['pooled']['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]"
    assert lo < 0.10 < hi  # "not shown on the larger set"
    paired = _paired(e2e["vs_recipe_before"]["force_rel_rmse"])
    flat = " ".join(README.split())
    assert f"**{big}**" in flat and paired in flat
    assert f"{1e3 * e2e['pooled']['energy_mae_per_atom']:.2f} meV/atom" in flat
    text = " ".join((RESULTS / "water_recipe_liquid" / "README.md").read_text().split())
    assert big in text and paired in text
    stages = _json("water_recipe_liquid/stage_seconds.json")
    for stage in ("generate:all", "label:all", "train", "bench"):
        assert f"{stages[stage]['seconds']:.0f}" in text and f"{stages[stage]['seconds']:.0f} s" in flat
    run = _json("water_recipe_liquid/stability_100ps.json")["runs"][0]
    assert run["stable"] and run["simulated_ps"] == 100.0 and run["temperature_K"] == 600.0
    assert f"closest pair {run['closest_pair_A']:.2f} A" in flat


def test_water_bench_rerun_numbers_match_the_results():
    """The water project's bench re-run (held-out teacher MD on the labelling workers, the teacher's
    RDF from its held-out frames): same held-out numbers as the first bench, the numbers README quotes."""
    first, rerun = _json("water_recipe_liquid/bench.json"), _json("water_recipe_liquid/bench_rerun/bench.json")
    for key, run in rerun["heldout"]["runs"].items():
        assert run["force_rel_rmse"] == first["heldout"]["runs"][key]["force_rel_rmse"]  # "to every digit"
        assert run["energy_mae_per_atom"] == first["heldout"]["runs"][key]["energy_mae_per_atom"]
    md = rerun["systems"]["water-96"]["md"]
    assert md["rdf"]["teacher_source"].startswith("held-out teacher MD water-96@300K")
    assert "chgnet" not in md["rdf"]["runs"]  # no teacher RDF run of its own
    stab = md["stability"]["student"][0]
    assert stab["status"] == "ok" and stab["simulated_ps"] == 20.0 and stab["stable"]
    seconds = _json("water_recipe_liquid/bench_rerun/stage_seconds.json")["bench"]["seconds"]
    flat = " ".join(README.split())
    text = " ".join((RESULTS / "water_recipe_liquid" / "README.md").read_text().split())
    assert f"**{seconds:,.0f} s**" in flat and f"{seconds:,.0f} s against 4,462 s" in text
    assert f"RDF overlap of {md['rdf']['overlap']:.3f}" in flat and f"**{md['rdf']['overlap']:.3f}**" in text
    speed = rerun["systems"]
    assert f"{speed['water-96']['speed']['ratio']['md_step']:.1f}x (water-96)" in text
    assert f"{speed['water-576']['speed']['ratio']['md_step']:.1f}x (water-576)" in text


def test_water_active_vs_random_rerun_numbers_match_the_results():
    """README and water_active_liquid/README: active = random at the same calls; target not shown."""
    res = _json("water_active_liquid/heldout_comparison.json")
    assert res["n_frames"] == 304
    st = res["students"]
    active = st["active"]["pooled"]
    lo, hi = active["force_rel_rmse_ci95"]
    flat = " ".join(README.split())
    text = " ".join((RESULTS / "water_active_liquid" / "README.md").read_text().split())
    assert f"active {active['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]" in flat
    for name in ("random x1", "random x4"):
        paired = _paired(st[name]["vs_active"]["force_rel_rmse"])
        assert paired in flat and paired in text
        lo, hi = st[name]["vs_active"]["force_rel_rmse"]["ci95"]
        assert lo < 0 < hi  # no difference shown: "the target is not shown"
    assert "**not shown** that way" in flat and "**With warm starts the target is not shown**" in text


def test_water_active_from_scratch_numbers_match_the_results():
    """README: the 177-call active dataset, retrained from scratch, beats the recipe's 444 structures."""
    res = _json("water_active_liquid/from_scratch.json")
    st = res["students"]
    best = st["active_scratch"]["pooled"]
    lo, hi = best["force_rel_rmse_ci95"]
    flat = " ".join(README.split())
    assert f"**{best['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]**" in flat
    paired = st["recipe_444"]["vs_active_scratch"]["force_rel_rmse"]
    assert paired["ci95"][0] > 0  # the recipe's own student is worse, interval above 0
    flipped = {"difference": -paired["difference"], "ci95": [-paired["ci95"][1], -paired["ci95"][0]]}
    assert _paired(flipped) in flat
    runs = st["active_scratch"]["per_run"]
    other = st["recipe_444"]["per_run"]
    assert all(runs[k]["force_rel_rmse"] < other[k]["force_rel_rmse"] for k in runs)  # "each of the 8 runs"
    assert len(runs) == 8 and 177 / 444 <= 0.5


def test_silicon_final_scratch_numbers_match_the_results():
    """silicon_final_scratch/README: on silicon the from-scratch final training is level with the
    warm start and the first-round student (why the silicon recipe kept final_training: none, and
    since dropped its rounds: silicon_recipe_e2e)."""
    res = _json("silicon_final_scratch/heldout600.json")
    assert res["n_frames"] == 600
    st = res["students"]
    text = " ".join((RESULTS / "silicon_final_scratch" / "README.md").read_text().split())
    scratch = st["scratch"]["pooled"]
    lo, hi = scratch["force_rel_rmse_ci95"]
    assert f"0.{round(scratch['force_rel_rmse'] * 1e4):04d} [{lo:.4f}, {hi:.4f}]" in text
    for name in ("warm", "first-round"):
        d = st[name]["vs_scratch"]["force_rel_rmse"]["difference"]
        assert abs(d) <= 0.0015  # "paired differences at most 0.001"
        assert f"{st[name]['pooled']['force_rel_rmse']:.4f}" in text
    from mlff_distiller.generation import load_recipe

    assert "active" not in load_recipe("silicon")  # no rounds, so no final training either


def test_water_recipe_active_numbers_match_the_results():
    """water_recipe_active/README and README: the built-in water recipe's active rounds and its
    from-scratch final student on the 304 held-out frames."""
    res = _json("water_recipe_active/heldout304.json")
    assert res["n_frames"] == 304 and len(res["runs"]) == 8
    st = res["students"]
    final = st["final"]["pooled"]
    lo, hi = final["force_rel_rmse_ci95"]
    assert hi <= 0.10  # "meets the 0.10 target with its whole interval"
    cell = f"**{final['force_rel_rmse']:.4f} [{lo:.4f}, {hi:.4f}]**"
    text = " ".join((RESULTS / "water_recipe_active" / "README.md").read_text().split())
    flat = " ".join(README.split())
    assert cell in text and f"**{1e3 * final['energy_mae_per_atom']:.2f}**" in text
    for name in ("warm", "first-round"):
        assert _paired(st[name]["vs_final"]["force_rel_rmse"]) in text
        assert st[name]["vs_final"]["force_rel_rmse"]["ci95"][0] > 0  # final is better, interval above 0
        assert all(st["final"]["per_run"][k]["force_rel_rmse"] < st[name]["per_run"][k]["force_rel_rmse"]
                   for k in st["final"]["per_run"])  # "the best of the three in each of the 8 runs"
    assert max(r["force_rel_rmse"] for r in st["final"]["per_run"].values()) <= 0.0915  # "at or below 0.091"
    rounds = _json("water_recipe_active/rounds.json")
    assert rounds["final"]["training"] == "scratch" and rounds["final"]["teacher_calls_total"] == 88
    assert f"{rounds['final']['heldout_after']['force_rmse_relative']:.4f}" in text
    for r in rounds["rounds"] + [rounds["final"]]:
        assert f"| {r['seconds']:.0f} |" in text
    assert f"{final['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]" in flat


def test_water_recipe_end_to_end_with_active_rounds_matches_the_results():
    """water_recipe_active/README (end to end) and README: the built-in recipe's gate, stages and
    its three students on the gate's frames."""
    summary = (RESULTS / "water_recipe_active" / "e2e" / "summary.md").read_text()
    assert "**Accuracy gate GO:" in summary and "active learning: 2 round(s), 88 teacher calls" in summary
    bench = _json("water_recipe_active/e2e/bench.json")
    pooled = bench["heldout"]["pooled"]
    lo, hi = pooled["force_rel_rmse_ci95"]
    text = " ".join((RESULTS / "water_recipe_active" / "README.md").read_text().split())
    flat = " ".join(README.split())
    assert f"**{pooled['force_rel_rmse']:.4f} [{lo:.4f}, {hi:.4f}]**" in text
    assert f"{pooled['force_rel_rmse']:.3f} [{lo:.3f}, {hi:.3f}]" in flat and hi <= 0.10
    md = bench["systems"]["water-96"]["md"]
    drift = 1e3 * md["nve"]["student"]["drift_ev_per_atom_per_ps"]
    assert f"{drift:.2f} meV/atom/ps" in text and f"{drift:.2f} meV/atom/ps" in flat and drift < 1
    stab = md["stability"]["student"][0]
    assert stab["stable"] and stab["simulated_ps"] == 20.0 and f"closest pair {stab['closest_pair_A']:.2f} A" in text
    assert f"{md['rdf']['overlap']:.3f}" in text
    speeds = [bench["systems"][s]["speed"]["ratio"]["md_step"] for s in ("water-96", "water-576")]
    assert f"{speeds[0]:.1f}x / {speeds[1]:.1f}x" in text  # README quotes the quiet re-run's (below)
    stages = _json("water_recipe_active/e2e/stage_seconds.json")
    for name in ("generate:all", "label:all", "train", "active:final", "bench"):
        assert f"| {stages[name]['seconds']:.0f} |" in text
    assert f"| {stages['active:round-1']['seconds']:.0f} / {stages['active:round-2']['seconds']:.0f} |" in text
    before = sum(v["seconds"] for k, v in stages.items() if k not in ("bench", "report"))
    assert f"**{before / 60:.0f} min**" in text
    st = _json("water_recipe_active/e2e/gate48.json")["students"]
    for name in ("warm", "first-round"):
        assert _paired(st[name]["vs_final"]["force_rel_rmse"]) in text
        assert all(st["final"]["per_run"][k]["force_rel_rmse"] < st[name]["per_run"][k]["force_rel_rmse"]
                   for k in st["final"]["per_run"])  # "better in each of the four runs"
    assert _paired(st["first-round"]["vs_final"]["force_rel_rmse"]) in flat


def test_water_first_round_and_final_100ps_match_the_runs():
    text = " ".join((RESULTS / "water_recipe_active" / "README.md").read_text().split())
    flat = " ".join(README.split())
    runs = {n: _json(f"water_recipe_active/e2e/stability_100ps_{n}.json")["runs"][0] for n in ("first", "final")}
    for run in runs.values():
        assert run["stable"] and run["simulated_ps"] == 100.0 and run["temperature_K"] == 600.0 and run["seed"] == 0
    first, final = runs["first"]["closest_pair_A"], runs["final"]["closest_pair_A"]
    assert f"**{first:.2f} A**" in text and f"| {final:.2f} A |" in text
    assert f"closest pair {final:.2f} A" in flat and f"closest pair reached {first:.2f} A" in flat
    assert 0.5 < first < final  # "just above the 0.5 A blow-up criterion"


def test_quickstart_learning_curve_tables_match_the_results():
    res = _json("learning_curves_quickstart.json")
    section = README[README.index("### Learning curves (quickstart"):]
    section = section[:section.index("\n## ") if "\n## " in section else len(section)]
    for key, col in (("vs_data", "structures"), ("vs_steps", "steps")):
        for r in res[key]:
            force, energy = _pooled_row(r["teacher MD"])
            test, _ = _pooled_row(r["test split"])
            offset = f"({1e3 * r['teacher MD']['energy_offset_per_atom']:+.1f})"
            row = next(line for line in section.splitlines() if line.startswith(f"| {r[col]} |"))
            assert force in row and energy in row and test in row and offset in row, (row, force, energy, test)
    flat = " ".join(section.split())
    dd = [r["teacher MD_vs_previous"]["force_rel_rmse"]["difference"] for r in res["vs_data"][1:]]
    ds = [r["teacher MD_vs_previous"]["force_rel_rmse"]["difference"] for r in res["vs_steps"][1:]]
    assert f"(paired {dd[0]:.3f} and {dd[1]:.3f} on the teacher's MD)" in flat
    assert f"({ds[0]:.3f}, {ds[1]:.3f}, then {ds[2]:.3f})" in flat
    later = res["vs_data"][1:] + res["vs_steps"][1:]
    assert all(r["teacher MD_vs_previous"]["force_rel_rmse"]["ci95"][1] < 0 for r in later)  # "each doubling helps"
    secs = {r["steps"]: r["train_s"] for r in res["vs_steps"]}
    assert f"3000 steps took {secs[3000]:.0f} s, 6000 took {secs[6000]:.0f} s" in flat


def test_silicon_recipe_end_to_end_runs_match_the_results():
    """silicon_recipe_e2e/README and README: three end-to-end runs of the silicon recipe (wall
    times from their stage seconds), the rounds' three students on the same 90 gate frames, and
    the 100 ps at 1800 K of the first-round and final students."""
    base = RESULTS / "silicon_recipe_e2e"
    text = " ".join((base / "README.md").read_text().split())
    flat = " ".join(README.split())
    minutes = {"with_rounds": 42.4, "no_rounds_1fs": 30.2, "current": 27.1}  # wall clock, start to end
    for run, stated in minutes.items():
        stages = _json(f"silicon_recipe_e2e/{run}/stage_seconds.json")
        assert all(v["status"] == "done" for v in stages.values())
        total = sum(v["seconds"] for v in stages.values())
        assert 0 <= stated - total / 60 <= 0.2, (run, total)  # the stages are all but the start-up
        assert f"**{stated:.1f} min**" in text, run
        bench = _json(f"silicon_recipe_e2e/{run}/bench.json")
        assert bench["verdict"]["passed"] is True
        stab = bench["systems"]["si-64"]["md"]["stability"]
        (rep,) = next(iter(stab.values()))
        assert rep["simulated_ps"] == 100.0 and rep["stable"]  # "100 ps, no blow-up"
    assert minutes["current"] <= 30.0 < minutes["no_rounds_1fs"] < minutes["with_rounds"]
    assert f"{minutes['current']:.1f} min" in flat
    gate = _json("silicon_recipe_e2e/with_rounds/gate90.json")["students"]
    assert gate["final"]["pooled"]["force_rel_rmse"] == pytest.approx(0.0622, abs=5e-5)
    assert gate["first-round"]["pooled"]["force_rel_rmse"] == pytest.approx(0.0624, abs=5e-5)
    d = gate["first-round"]["vs_final"]["force_rel_rmse"]
    assert abs(d["difference"]) < 0.001 and d["ci95"][0] <= 0.0005  # "level", not better
    for who in ("first", "final"):
        runs = _json(f"silicon_recipe_e2e/with_rounds/stability_100ps_{who}.json")["runs"]
        assert len(runs) == 2 and all(r["stable"] and r["simulated_ps"] == 100.0 for r in runs)
    pooled = _json("silicon_recipe_e2e/current/bench.json")["heldout"]["pooled"]
    assert pooled["n_frames"] == 120
    assert f"{1e3 * pooled['energy_mae_per_atom']:.2f} meV/atom" in flat


def test_water_recipe_rerun_on_a_quiet_machine_matches_the_results():
    """water_recipe_e2e/README, README and docs/recipes.md: the re-run's verdict, speed, stage
    seconds and wall time; it reproduced the earlier run's gate exactly (same students)."""
    summary = (RESULTS / "water_recipe_e2e" / "summary.md").read_text()
    assert "**Accuracy gate GO:" in summary
    bench, earlier = _json("water_recipe_e2e/bench.json"), _json("water_recipe_active/e2e/bench.json")
    for key in ("force_rel_rmse", "energy_mae_per_atom"):
        assert bench["heldout"]["pooled"][key] == earlier["heldout"]["pooled"][key]  # "bit for bit"
    text = " ".join((RESULTS / "water_recipe_e2e" / "README.md").read_text().split())
    flat = " ".join(README.split())
    recipes = " ".join((ROOT / "docs" / "recipes.md").read_text().split())
    pooled = bench["heldout"]["pooled"]
    lo, hi = pooled["force_rel_rmse_ci95"]
    assert f"**{pooled['force_rel_rmse']:.4f} [{lo:.4f}, {hi:.4f}]**" in text
    assert f"**{1e3 * pooled['energy_mae_per_atom']:.3f} meV/atom**" in text
    speeds = [bench["systems"][s]["speed"]["ratio"]["md_step"] for s in ("water-96", "water-576")]
    assert f"{speeds[0]:.1f}x / {speeds[1]:.1f}x" in text and f"{speeds[0]:.1f}x / {speeds[1]:.1f}x" in flat
    stages = _json("water_recipe_e2e/stage_seconds.json")
    for name in ("generate:all", "label:all", "train", "active:final", "bench"):
        assert f"| {stages[name]['seconds']:.0f} |" in text
    assert f"| {stages['active:round-1']['seconds']:.0f} / {stages['active:round-2']['seconds']:.0f} |" in text
    total = sum(v["seconds"] for v in stages.values())
    before = total - stages["bench"]["seconds"] - stages["report"]["seconds"]
    assert f"{before / 60:.1f} min before the bench" in text and f"{before / 60:.1f} min before the bench" in flat
    wall = "47.1 min"  # 14:21:24-15:08:28 UTC; the stage seconds add up to within 6 s of it
    assert abs(total - 2824) < 10 and wall in text and wall in flat and wall in recipes
    assert f"{before / 60:.1f} min" in recipes and total / 60 > 30  # "not met"


def test_water_recipe_in_30_min_matches_the_results():
    """water_recipe_30min/README, README, docs/recipes.md and the recipe's comment: the three runs'
    verdicts, gate numbers, wall times and the paired cost of the cuts."""
    text = " ".join((RESULTS / "water_recipe_30min" / "README.md").read_text().split())
    flat = " ".join(README.split())
    recipes = " ".join((ROOT / "docs" / "recipes.md").read_text().split())
    recipe_comment = " ".join((ROOT / "src" / "mlff_distiller" / "generation" / "recipes" / "water.yaml")
                              .read_text().split())
    totals = {}
    for run in ("full", "cuts", "cuts_equil8"):
        bench = _json(f"water_recipe_30min/{run}/bench.json")
        assert bench["verdict"]["passed"] and "**Accuracy gate GO:" in (
            RESULTS / "water_recipe_30min" / run / "summary.md").read_text()
        pooled = bench["heldout"]["pooled"]
        lo, hi = pooled["force_rel_rmse_ci95"]
        assert f"{pooled['force_rel_rmse']:.4f} [{lo:.4f}, {hi:.4f}]" in text
        stages = _json(f"water_recipe_30min/{run}/stage_seconds.json")
        totals[run] = sum(v["seconds"] for v in stages.values())
        assert f"**{totals[run]:,.0f}**" in text
        assert f"{bench['systems']['water-96']['speed']['ratio']['md_step']:.1f}x" in text
    # wall times from the run's start and end stamps; the stage seconds add up to within 6 s of them
    stamps = (("full", "39.0 min", 2342), ("cuts", "26.4 min", 1581), ("cuts_equil8", "28.8 min", 1726))
    for run, wall, seconds in stamps:
        assert 0 <= seconds - totals[run] < 6 and wall in text
    assert "26.4 min" in flat and "26.4 min" in recipes and "26.4 min" in recipe_comment
    assert totals["cuts"] / 60 < 30 < totals["full"] / 60
    gate = _json("water_recipe_30min/gate48.json")["students"]
    d = gate["cuts"]["vs_full"]["force_rel_rmse"]
    cell = f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
    assert cell == "+0.006 [+0.005, +0.007]" and cell in text and cell in flat and cell in recipes
    h304 = _json("water_recipe_30min/heldout304.json")
    assert h304["n_frames"] == 304
    d = h304["students"]["cuts"]["vs_full"]["force_rel_rmse"]
    cell = f"{d['difference']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"
    pair = (f"{h304['students']['cuts']['pooled']['force_rel_rmse']:.4f} against "
            f"{h304['students']['full']['pooled']['force_rel_rmse']:.4f}")
    assert cell in text and cell in flat and pair in flat
    first, final = (_json(f"water_recipe_30min/stab100_{w}.json")["runs"][0] for w in ("first", "final"))
    assert first["status"] == "exploded" and f"{first['simulated_ps']:.1f} ps" in flat  # "blew up at 14.2 ps"
    assert final["status"] == "ok" and final["simulated_ps"] == 100.0 and f"{final['closest_pair_A']:.2f} A" in flat
    # the fewer roots are not the loss: the twin that kept them is no better
    assert gate["cuts-equil8"]["pooled"]["force_rel_rmse"] > gate["cuts"]["pooled"]["force_rel_rmse"]


def test_chgnet_one_backward_numbers_match_the_results():
    """README, docs/teachers.md and water_recipe_e2e/README: the one-backward CHGNet's speed-up
    per call, its agreement with predict_graph, the faster water generation and the 100 ps runs."""
    rows = {r["system"]: r for r in _json("chgnet_one_backward.json")["rows"]}
    ratios = [r["ratio"] for r in rows.values()]
    flat = " ".join(README.split())
    teachers = " ".join((ROOT / "docs" / "teachers.md").read_text().split())
    assert f"{min(ratios):.2f}-{max(ratios):.2f}x" in teachers and f"{min(ratios):.2f}-{max(ratios):.2f}x" in flat
    assert f"{rows['aspirin']['ratio']:.2f}x (aspirin) to {rows['si-512']['ratio']:.2f}x (Si-512)" in flat
    for r in rows.values():  # "same labels to float32 rounding"
        d = r["max_abs_diff"]
        assert d["energy_eV_per_atom"] < 1e-6 and d["stress_GPa"] < 1e-4
        assert d["forces_eV_per_A"] < 1e-5 * max(1.0, r["max_abs_force_eV_per_A"]) * 2
    text = " ".join((RESULTS / "water_recipe_e2e" / "README.md").read_text().split())
    log = (RESULTS / "water_recipe_e2e" / "generate_one_backward.txt").read_text()
    before = _json("water_recipe_e2e/stage_seconds.json")["generate:all"]["seconds"]
    assert "496 of 496 structures" in log and "in 464.9 s on 2 Dask workers" in log
    assert f"**464.9 s against {before:.1f} s**" in text and "465 s instead of 738 s" in flat
    si_log = (RESULTS / "silicon_recipe_e2e" / "generate_one_backward.txt").read_text()
    si_before = _json("silicon_recipe_e2e/current/stage_seconds.json")["generate:all"]["seconds"]
    si_text = " ".join((RESULTS / "silicon_recipe_e2e" / "README.md").read_text().split())
    assert "800 of 800 structures" in si_log and "in 391.4 s on 2 Dask workers" in si_log
    assert f"**391.4 s against {si_before:.1f} s**" in si_text and "391 s instead of 628 s" in flat
    for who, closest in (("first", "0.52-0.53 A"), ("final", "0.85 A")):
        runs = _json(f"water_recipe_e2e/stab100_{who}.json")["runs"]
        assert [r["seed"] for r in runs] == [1, 2] and all(r["status"] == "ok" and r["simulated_ps"] == 100.0
                                                           for r in runs)
        shown = sorted({f"{r['closest_pair_A']:.2f}" for r in runs})
        assert all(v in closest for v in shown) and closest in flat


def test_generation_scaling_row_matches_its_two_rounds():
    """The seed-m2 1k tier: the README's 1.73x and wall times are the two rounds' own runs."""
    flat = " ".join(README.split())
    for tag in ("generation_workers_seed_m2_1k_window", "generation_workers_seed_m2_1k_window_round2"):
        res = _json(f"{tag}.json")
        walls = {r["workers"]: r["wall_s"] for r in res["runs"]}
        assert f"{walls[1]:.0f} s vs {walls[2]:.0f} s" in flat, tag
        assert res["identical_pools"] and f"{res['median_ratio']:.2f}" == "1.73" and res["median_ratio"] >= 1.6
        assert all(r["roots"]["discarded"] == 0 for r in res["runs"])
    assert "**1.73x** in two rounds" in flat
