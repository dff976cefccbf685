#!/usr/bin/env bash
# Train any config on the lent GPU for MINUTES of wall time, in one device call (bf16 on CUDA is the trainer's
# default), and bring back under $OUT: gpu.pt (EMA weights, config, lineage, sampling state: evaluate and warm-start
# from it on the CPU), throughput.json and log.txt.  Extra arguments are passed to `moldiff train` (--set ...).
#
#   bash benchmarks/gpu/pack_data.sh                    # here, once: .gpucache/ (compressed QM9 cache, ~39 MB)
#   # device run, carry [".gpucache"]:
#   bash benchmarks/gpu/train.sh qm9_flow_gpu 10 --set train.init=...
#   # dry run of the whole script on the CPU:
#   DEVICE=cpu OUT=/tmp/gpu_out bash benchmarks/gpu/train.sh smoke/qm9_flow 0.3
#
# Tracking is off unless TRACK=true (then carry .whl from ../shared/device/wheels.sh: the machine has no MLflow);
# the QM9 flow trains without RDKit, MLflow, POT or ASE.
set -u
CONFIG=${1:?usage: train.sh CONFIG MINUTES [--set key=value ...]}; MINUTES=${2:?minutes}; shift 2
DEV=${DEVICE:-cuda}
source "$(dirname "$0")/setup.sh"
stamp "training $CONFIG for $MINUTES min on $DEV"
limit=$(python3 -c "print(int(float('$MINUTES') * 60 + 240))")  # + start-up and the final checkpoint
timeout "$limit" python3 -m moldiff train "$CONFIG" --no-progress --set runs_root="$W/runs" --set name=gpu \
  --set train.device="$DEV" --set train.max_minutes="$MINUTES" --set train.steps=100000000 \
  --set train.ckpt_every=2000 --set eval.n_samples=0 --set tracking.enabled="${TRACK:-false}" \
  --set tracking.log_checkpoints=false "$@"
echo "train exit $?"
stamp "EMA checkpoint and throughput"
python3 - "$W" "$OUT" "$CONFIG" <<'PY'
import json, sys, torch
from pathlib import Path
from moldiff.training.checkpoint import latest_checkpoint, save_checkpoint
found = latest_checkpoint(next(Path(sys.argv[1], "runs").glob("*/gpu/checkpoints")))
if found is None:
    sys.exit("no checkpoint was written")
path, s = found
keep = {k: s[k] for k in ("ema", "step", "task", "config", "lineage", "sampling", "torch_version") if k in s}
keep["model"] = keep["ema"]  # an evaluation checkpoint: `moldiff eval gpu.pt`, `train.init=gpu.pt`
save_checkpoint(keep, Path(sys.argv[2]) / "gpu.pt")
lin = s.get("lineage", {})
seg = lin.get("segments", [{}])[-1]
minutes = seg.get("gpu_minutes", 0.0) or seg.get("cpu_hours", 0.0) * 60
dev = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
info = {"config": sys.argv[3], "device": dev, "step": int(s["step"]), "segment_steps": seg.get("end_step", 0) - seg.get("start_step", 0),
        "samples": seg.get("samples", 0), "minutes": minutes, "batch_size": s["config"]["train"]["batch_size"],
        "samples_per_second": seg.get("samples", 0) / max(minutes * 60, 1e-9), "lineage": {k: lin.get(k) for k in ("cpu_hours", "gpu_minutes", "samples_seen", "steps")}}
(Path(sys.argv[2]) / "throughput.json").write_text(json.dumps(info, indent=1) + "\n")
print(json.dumps(info, indent=1))
PY
ls -la "$OUT"; stamp done
