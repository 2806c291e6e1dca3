"""The flat recipe sections as pydantic dataclasses (``mlff_distiller.settings.section``): typed,
limited fields, one-line house messages from the one translator, the dataclass API kept."""

from __future__ import annotations

import dataclasses

import pytest

from mlff_distiller.active.config import ActiveConfig
from mlff_distiller.bench.heldout import HeldoutConfig
from mlff_distiller.bench.runner import BenchConfig
from mlff_distiller.errors import ConfigError
from mlff_distiller.labeling import HPCConfig, LabelingConfig
from mlff_distiller.quality import QualityConfig
from mlff_distiller.student import StudentConfig
from mlff_distiller.training import TrainConfig

SECTIONS = [ActiveConfig, BenchConfig, HPCConfig, LabelingConfig, StudentConfig, TrainConfig]


def _message(build, *args) -> str:
    with pytest.raises(ConfigError) as err:
        build(*args)
    msg = str(err.value)
    assert "\n" not in msg and "pydantic" not in msg and "Input should" not in msg
    return msg


@pytest.mark.parametrize("cls, d, expected", [
    (TrainConfig, {"batch_size": True}, "training.batch_size must be an integer, got True"),
    (TrainConfig, {"max_epochs": 2.5}, "training.max_epochs must be an integer, got 2.5"),
    (TrainConfig, {"lr": "abc"}, "training.lr must be a number, got 'abc'"),
    (TrainConfig, {"in_memory": "yes"}, "training.in_memory must be true or false, got 'yes'"),
    (TrainConfig, {"ema_decay": 1}, "training.ema_decay = 1 is invalid: must be in [0, 1) (0 turns EMA off)"),
    (TrainConfig, {"device": "cdua"}, "training.device: unknown value 'cdua' (did you mean 'cuda'?); allowed: auto"),
    (ActiveConfig, {"target_force_mae": -1}, "active.target_force_mae = -1 is invalid: must be >= 0 eV/A (0 = off)"),
    (ActiveConfig, {"timestep": float("inf")}, "active.timestep must be a finite number, got inf"),
    (ActiveConfig, {"sample_interval": 200}, "active.sample_interval = 200 is invalid: must be in [1, md_steps]"),
    (LabelingConfig, {"hpc": {"jobs": 0}}, "labeling.hpc.jobs = 0 is invalid: must be >= 1"),
    (LabelingConfig, {"hpc": {"quue": "a"}}, "labeling.hpc: unknown key 'quue' (did you mean 'queue'?)"),
    (LabelingConfig, {"min_distance": -1}, "labeling.min_distance = -1 is invalid: must be >= 0 A"),
    (StudentConfig, {"cutoff": 30}, "student.cutoff = 30 is invalid: must be in [0.5, 20] A (typical: 4-6 A)"),
    (StudentConfig, {"elements": [1, "Xx"]}, "student.elements = [1, 'Xx'] is invalid: must be a list"),
    (BenchConfig, {"rdf_every": 0}, "bench.rdf_every = 0 is invalid: must be >= 1"),
    (BenchConfig, {"md": "yes"}, "bench.md must be true or false, got 'yes'"),
    (BenchConfig, {"heldout": {"systems": ["si-64"], "frames": 0}}, "bench.heldout.frames = 0 is invalid: must be"),
    (HeldoutConfig, {"systems": ["si"], "timestep_fs": 0}, "bench.heldout.timestep_fs = 0 is invalid: must be > 0 fs"),
    (QualityConfig, {"checks": {"stress": {"max": -1}}}, "quality.checks.stress.max = -1 is invalid: must be >= 0 eV"),
    (QualityConfig, {"gates": {"10k": {"min_elements": 1.5}}}, "quality.gates.10k.min_elements must be an integer"),
    (QualityConfig, {"diversity": {"size_bins": [10, 5]}}, "quality.diversity.size_bins = [10, 5] is invalid"),
])
def test_bad_values_are_one_house_line(cls, d, expected):
    assert _message(cls.from_dict, d).startswith(expected)


def test_yaml_numbers_and_integral_floats_are_accepted():
    cfg = TrainConfig.from_dict({"lr": "1e-3", "max_epochs": 4.0, "stress_weight": 2})
    assert cfg.lr == 1e-3 and cfg.max_epochs == 4 and isinstance(cfg.max_epochs, int)
    assert cfg.stress_weight == 2.0 and isinstance(cfg.stress_weight, float)
    assert ActiveConfig.from_dict({"temperatures": 300}).temperatures == [300.0]
    assert StudentConfig.from_dict({"elements": ["O", 1, "H", 1]}).elements == [1, 8]


@pytest.mark.parametrize("cls", SECTIONS)
def test_dataclass_api_is_kept(cls):
    cfg = cls()
    names = [f.name for f in dataclasses.fields(cls)]
    assert list(dataclasses.asdict(cfg)) == names
    assert cls.from_dict(dataclasses.asdict(cfg)) == cfg  # defaults round-trip
    unknown = _message(cls.from_dict, {"no_such_key": 1})
    assert "unknown key 'no_such_key'" in unknown and "allowed: " + ", ".join(names) in unknown


def test_constructor_and_replace_validate_too():
    with pytest.raises(ConfigError, match=r"training.lr = -1 is invalid: must be > 0"):
        dataclasses.replace(TrainConfig(), lr=-1)
    with pytest.raises(ConfigError, match=r"student.repulsion: unknown value 'lj'"):
        StudentConfig(repulsion="lj")
    with pytest.raises(ConfigError, match=r"bench: unknown key 'timestep' \(did you mean 'timestep_fs'"):
        dataclasses.replace(BenchConfig(), timestep=1.0)
    assert TrainConfig().replace(lr=0.1).lr == 0.1
    assert dataclasses.replace(LabelingConfig(), workers=3).workers == 3


def test_not_a_mapping_is_named():
    assert _message(TrainConfig.from_dict, [1]) == "training must be a mapping of field: value, got list"
    assert _message(ActiveConfig.from_dict, {1: 2}).startswith("active: unknown key '1'")
