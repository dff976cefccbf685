#!/usr/bin/env bash
# Issue 17 on one GPU, in one call: the latent route (field autoencoder, then latent trajectory prior) and the
# pixel-space prior trained side by side for equal wall-clock minutes on the same GPU, then the latent-vs-pixel
# assimilation benchmark (coarse and sparse observations, side by side).  Everything that comes back is under $OUT:
# log.txt, the three checkpoints (EMA weights only), eval_coarse.tar.gz, eval_sparse.tar.gz and runs.tar.gz (the
# MLflow store and figures of the training runs).  The evaluation stops DEADLINE seconds (default 555) after
# the start, keeping the rows it finished.  PIXEL_CKPT=path: use that pixel prior instead of training one.
#
#   bash benchmarks/gpu/latent_vs_pixel.sh                      # the device tool; carry .whl and .gpucache
#   WHEELS=0 SIZE=smoke DEVICE=cpu AE_MIN=0.2 LATENT_MIN=0.2 PIXEL_MIN=0.4 CASES=2 WINDOWS=1 ENSEMBLE=2 \
#       OUT=/tmp/gpu_out bash benchmarks/gpu/latent_vs_pixel.sh  # a dry run of the whole script on a CPU
#
# .gpucache/fields/ holds the cached Kolmogorov test split (the same test windows as on the CPU); the training
# split is simulated on the GPU (chaotic: other trajectories than the CPU's, of the same distribution).
set -u
SIZE=${SIZE:-full}; DEV=${DEVICE:-cuda}
AE_MIN=${AE_MIN:-1.25}; LATENT_MIN=${LATENT_MIN:-2.5}; PIXEL_MIN=${PIXEL_MIN:-3.75}
DEADLINE=${DEADLINE:-555}; CASES=${CASES:-16}; WINDOWS=${WINDOWS:-2}; ENSEMBLE=${ENSEMBLE:-8}
STEPS=${STEPS:-32}; LENGTH=${LENGTH:-32}; METHODS=${METHODS:-sda dps mmps}; BATCH=${BATCH:-64}
source "$(dirname "$0")/setup.sh"
R=$W/runs
python3 -c "import importlib.metadata as m; print('tasks:', sorted(e.name for e in m.entry_points(group='moldiff.tasks')))"

if [ "$SIZE" = smoke ]; then C=configs/smoke; PIXEL_CFG=configs/smoke/trajectory_kolmogorov.yaml
else C=configs; PIXEL_CFG=configs/kolmogorov_coarse.yaml; fi

stamp "simulating the training split on $DEV"
timeout 240 python3 -c "
from physics.fields.datasets import get_dataset, load_trajectories
for split in ('train', 'test'):
    x = load_trajectories('kolmogorov', split, spec=get_dataset('kolmogorov', '$SIZE'), device='$DEV', progress=False)
    print(split, tuple(x.shape), float(x.std()))
" || exit 1

common=(--no-progress --set runs_root="$R" --set tracking.experiment=gpu-latent --set train.device="$DEV"
        --set tracking.log_checkpoints=false --set train.steps=1000000 --set train.ckpt_every=100000)
AE=$R/gpu-latent/ae_gpu/checkpoints/last.pt
LAT=$R/gpu-latent/latent_gpu/checkpoints/last.pt
PIX=$R/gpu-latent/pixel_gpu/checkpoints/last.pt
stamp "training: autoencoder ${AE_MIN} + latent prior ${LATENT_MIN} min | pixel prior ${PIXEL_MIN} min, side by side"
( python3 -m moldiff train $C/kolmogorov_ae.yaml "${common[@]}" --set name=ae_gpu --set train.max_minutes="$AE_MIN" \
    --set train.batch_size=32 > "$W/ae.log" 2>&1 && echo "ae done" &&
  python3 -m moldiff train $C/kolmogorov_latent.yaml "${common[@]}" --set name=latent_gpu \
    --set train.max_minutes="$LATENT_MIN" --set train.batch_size=64 --set latent.autoencoder="$AE" \
    --set eval.n_trajectories=0 --set eval.prior_samples=0 > "$W/latent.log" 2>&1 && echo "latent done" ) & p1=$!
if [ -n "${PIXEL_CKPT:-}" ]; then PIX=$PIXEL_CKPT; echo "pixel prior: $PIX (trained earlier)"; p2=; else
python3 -m moldiff train "$PIXEL_CFG" "${common[@]}" --set name=pixel_gpu --set train.max_minutes="$PIXEL_MIN" \
  --set train.batch_size=64 --set eval.n_trajectories=0 > "$W/pixel.log" 2>&1 && echo "pixel done" & p2=$!
fi
wait $p1 ${p2:-}  # by pid: a bare wait would also wait for the tee of the log
for f in ae latent pixel; do echo "--- $f.log (tail)"; tail -n 25 "$W/$f.log" | tr '\r' '\n' | tail -n 25; done

stamp "checkpoints: EMA weights only"
python3 - "$AE" "$LAT" "$PIX" "$OUT" <<'PY'
import sys, torch
from pathlib import Path
for src, name in zip(sys.argv[1:4], ("ae_gpu", "latent_gpu", "pixel_gpu")):
    if not Path(src).is_file():
        print("missing", src); continue
    s = torch.load(src, map_location="cpu", weights_only=True)
    keep = {k: s[k] for k in ("ema", "step", "task", "config", "run_id", "torch_version") if k in s}
    keep["model"] = keep["ema"]
    torch.save(keep, Path(sys.argv[4]) / f"{name}.pt")
    print(name, "step", s["step"])
PY

EVAL_TIMEOUT=$(( DEADLINE - ($(date +%s) - t0) - 25 ))  # what is left before the deadline, less packaging
stamp "assimilation benchmark, coarse | sparse side by side (timeout ${EVAL_TIMEOUT} s)"
ev=(--latent "$LAT" --pixel "$PIX" --methods $METHODS --trajectories "$CASES" --windows "$WINDOWS"
    --ensemble "$ENSEMBLE" --length "$LENGTH" --steps "$STEPS" --device "$DEV" --batch-size "$BATCH")
timeout "$EVAL_TIMEOUT" python3 -m benchmarks.latent_assimilation "${ev[@]}" --settings coarse --prior-samples 8 \
  --out "$W/eval_coarse/assimilation" > "$W/eval_coarse.log" 2>&1 & p1=$!
timeout "$EVAL_TIMEOUT" python3 -m benchmarks.latent_assimilation "${ev[@]}" --settings sparse --prior-samples 0 \
  --out "$W/eval_sparse/assimilation" > "$W/eval_sparse.log" 2>&1 & p2=$!
wait $p1 $p2
for s in coarse sparse; do
  echo "--- eval_$s.log"; tail -n 40 "$W/eval_$s.log"; cp "$W/eval_$s.log" "$W/eval_$s/" 2>/dev/null
  tar -czf "$OUT/eval_$s.tar.gz" -C "$W" "eval_$s" 2>/dev/null
done
cp "$W"/*.log "$R"/ 2>/dev/null
tar -czf "$OUT/runs.tar.gz" --exclude='*.pt' -C "$W" runs
ls -la "$OUT"; stamp done
