#!/usr/bin/env bash
# Pack the QM9 caches (built here by any QM9 command) into .gpucache/qm9/ for the device machine, compressed
# (~39 MB: the working tree plus carried paths must stay under 64 MiB).  np.load reads them as the same arrays, so
# their checksums hold.  .gpucache/ is git-ignored through .git/info/exclude.
set -euo pipefail
root=$(git rev-parse --show-toplevel); cd "$root"
grep -qxF '/.gpucache/' .git/info/exclude 2>/dev/null || echo '/.gpucache/' >> .git/info/exclude
src=${MOLDIFF_CACHE:-$HOME/.cache/moldiff}/qm9
mkdir -p .gpucache/qm9
python3 - "$src" .gpucache/qm9 <<'PY'
import sys
import numpy as np
from pathlib import Path
for name in ("qm9.npz", "qm9_graphs.npz"):
    with np.load(Path(sys.argv[1]) / name, allow_pickle=False) as z:
        np.savez_compressed(Path(sys.argv[2]) / name, **{k: z[k] for k in z.files})
PY
du -sh .gpucache
