"""mlff-distiller: distil a large machine-learned force field into a small, fast student.

Pipeline stages, one subpackage each:

* :mod:`mlff_distiller.generation` -- structures (molecules, crystals, ...) and samplers
* :mod:`mlff_distiller.teachers`   -- teacher models (CHGNet default, Orb, FeNNol, any ASE calculator)
* :mod:`mlff_distiller.labeling`   -- teacher labels on Dask, resumable
* :mod:`mlff_distiller.data`       -- HDF5 dataset store, ``MolecularDataset``, neighbour lists
* :mod:`mlff_distiller.quality`    -- validation, diversity, gates, report, dataset card
* :mod:`mlff_distiller.student`    -- the student network and its ASE calculator
* :mod:`mlff_distiller.training`   -- ``DistillationTrainer``
* :mod:`mlff_distiller.bench`      -- MD profiler: student against teacher
* :mod:`mlff_distiller.pipeline`   -- ``mlff-distill run``: all stages end to end

Units are ASE's throughout: eV, Angstrom, eV/Angstrom, eV/Angstrom^3, amu, fs.
"""

__version__ = "0.1.0"
