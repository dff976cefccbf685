# Sourced by the one-call GPU scripts (train.sh, latent_vs_pixel.sh): the carried wheels (if any), moldiff's entry
# points without a build, the carried data cache, and what the machine is.  Needs OUT; sets W (a work folder), LOG,
# t0 and stamp(); sends everything printed to $OUT/log.txt as well.
OUT=${OUT:?set OUT}; mkdir -p "$OUT"
W=$(mktemp -d); LOG=$OUT/log.txt
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
exec > >(tee -a "$LOG") 2>&1
t0=$(date +%s); stamp() { echo "=== $(( $(date +%s) - t0 )) s: $*"; }

stamp setup
if [ -d .whl ] && [ "${WHEELS:-1}" = 1 ]; then  # WHEELS=0: use the packages already installed
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
if ! python3 -c "import moldiff, importlib.metadata as m; assert any(e.name == 'qm9_flow' for e in m.entry_points(group='moldiff.tasks'))" 2>/dev/null; then
  # the project's entry points (tasks, commands) without building it: a dist-info beside the carried wheels
  mkdir -p /tmp/site
  export PYTHONPATH=$PWD:/tmp/site:${PYTHONPATH:-}
  python3 - <<'PY' || exit 1
import tomllib
from pathlib import Path
p = tomllib.loads(Path("pyproject.toml").read_text())["project"]
d = Path("/tmp/site") / f"{p['name']}-{p['version']}.dist-info"
d.mkdir(parents=True, exist_ok=True)
(d / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {p['name']}\nVersion: {p['version']}\n")
(d / "entry_points.txt").write_text("".join(f"[{g}]\n" + "".join(f"{k} = {v}\n" for k, v in eps.items()) + "\n"
                                            for g, eps in p["entry-points"].items()))
PY
fi
[ -d .gpucache ] && export MOLDIFF_CACHE=$PWD/.gpucache
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null
python3 -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())"
