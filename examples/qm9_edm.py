"""EDM on QM9 through the Python API: train, sample molecules, score them, and score the data itself.

    python examples/qm9_edm.py                 # ~10 min on a laptop CPU; molecules stay poor at this size
    python examples/qm9_edm.py --tiny          # under a minute (the test's setting)

The real recipe is configs/qm9_edm.yaml (EGNN 9 x 256, batch 64, lr 1e-4, EMA 0.9999); it wants a GPU.
Everything is tracked in MLflow: ``mlflow ui --backend-store-uri sqlite:///runs/mlflow.db``.
"""

import argparse
from pathlib import Path

import moldiff
import moldiff.molecules
from moldiff.molecules.draw import molecule_grid
from moldiff.molecules.io import read_molecules

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=3000)
ap.add_argument("--runs-root", default="runs")
ap.add_argument("--tiny", action="store_true", help="tiny model, few steps (for tests)")
args = ap.parse_args()

root = Path(__file__).resolve().parents[1]
overrides = [f"train.steps={args.steps}", f"runs_root={args.runs_root}", "name=example_qm9",
             "model.hidden=64", "model.layers=4", "data.max_train=20000", "train.batch_size=64",
             "train.ckpt_every=1000", "eval.n_samples=64", "eval.batch_size=64"]
if args.tiny:
    overrides += ["model.hidden=16", "model.layers=1", "data.max_train=500", "train.batch_size=16",
                  "eval.n_samples=8", "eval.batch_size=8", "sampler.steps=20", "eval.trajectory_frames=5"]
cfg = moldiff.load_config(root / "configs" / "smoke" / "qm9_edm.yaml", overrides)
result = moldiff.train(cfg, overwrite=True)  # a re-run of the example starts over
print(f"trained {result.step} steps in {result.seconds:.0f} s; checkpoint {result.checkpoint}")

# Sample with the shared ancestral sampler (EDM uses all 1000 levels; fewer skip levels), write SDF.
n, steps = (8, 20) if args.tiny else (100, 500)
sdf = Path(args.runs_root) / "example_qm9_samples.sdf"
moldiff.sample(result.checkpoint, n, out=sdf, sampler="ancestral", steps=steps, seed=1, progress=False)

# Score the file with the EDM protocol; novelty is against QM9's training SMILES (built once, cached).
metrics = moldiff.molecules.evaluate_molecule_file(sdf, novelty=not args.tiny, progress=False)
print("samples:\n" + metrics.table())

# The same evaluator on real QM9 molecules: this is EDM's "data" row (full split: `moldiff eval-molecules --dataset qm9`).
data = moldiff.molecules.evaluate_dataset("qm9", "train", limit=200 if args.tiny else 5000, novelty=False, progress=False)
print("QM9 training molecules:\n" + data.table())

fig = molecule_grid(read_molecules(sdf)[:8], title="sampled molecules")
fig.savefig(Path(args.runs_root) / "example_qm9.png", dpi=110)
print(f"figure: {Path(args.runs_root) / 'example_qm9.png'}")
