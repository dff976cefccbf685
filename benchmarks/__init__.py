"""The scripts behind every published figure, as a small package.

Run one from the repository root as a module: ``python -m benchmarks.qm9_ablation --help``.  Each writes its records
(JSON), its table (Markdown) and its figures (PNG) under ``benchmarks/results/`` and names the machine they were
measured on (:func:`benchmarks.harness.machine`); checkpoints and other large artefacts stay in ``runs/``.
"""
