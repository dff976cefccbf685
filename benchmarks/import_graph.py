"""The project's import graph, measured on a source tree (a checkout of any commit): circles, upward arrows,
function-level imports of the project's own modules, duplicate pairs and the largest files.

    python -m benchmarks.import_graph measure [--rev REV] [--label NAME]   # one commit (default: the working tree)
    python -m benchmarks.import_graph table                                # results/import_graph.{json,md}

An *arrow* is an import of one project module by another (``import`` / ``from`` statements read with ``ast``;
a package's ``__init__`` counts as the package).  A *circle* is a strongly connected set of modules among the
module-level arrows (one that runs when the file is imported).  An *upward arrow* breaks the layering that
``pyproject.toml``'s import-linter contracts state: the core (every ``moldiff`` module outside
``moldiff.molecules``) importing a domain (``moldiff.molecules`` or ``physics``); ``moldiff.diffusion`` importing
``moldiff.training``, MLflow or RDKit; ``moldiff.nn`` importing a sampler; ``physics`` importing
``moldiff.molecules``.  Duplicate pairs come from the ``duplicates`` command (six or more shared lines) when it is
on the PATH.
"""

from __future__ import annotations

import argparse
import ast
import json
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from pathlib import Path

from benchmarks.harness import RESULTS, machine

ROOT = Path(__file__).resolve().parents[1]
OUT = RESULTS / "import_graph"
PACKAGES = ("moldiff", "physics")


def _module_name(path: Path, root: Path) -> str:
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_pkg: bool) -> str:
    if not node.level:
        return node.module or ""
    base = module.split(".") if is_pkg else module.split(".")[:-1]
    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
    return ".".join(base + ([node.module] if node.module else []))


def read_tree(root: Path) -> dict:
    """``{module: {"file", "lines", "imports": [(target, level)]}}`` with ``level`` ``module`` or ``function``."""
    mods = {}
    for pkg in PACKAGES:
        for path in sorted((root / pkg).rglob("*.py")):
            name = _module_name(path, root)
            text = path.read_text(errors="replace")
            tree = ast.parse(text)
            is_pkg = path.name == "__init__.py"
            found = []

            def visit(node, depth):
                for child in ast.iter_child_nodes(node):
                    inner = depth + isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
                    if isinstance(child, ast.Import):
                        found.extend((a.name, inner) for a in child.names)
                    elif isinstance(child, ast.ImportFrom):
                        target = _resolve(child, name, is_pkg)  # each name: a submodule, or a name in the module
                        found.extend((f"{target}.{a.name}", inner) for a in child.names)
                    visit(child, inner)

            visit(tree, 0)
            mods[name] = {"file": str(path.relative_to(root)), "lines": text.count("\n"),
                          "imports": [(t, "function" if d else "module") for t, d in found]}
    return mods


def _own(target: str, mods: dict) -> str | None:
    while target and target not in mods:
        target = target.rpartition(".")[0]
    return target or None


def _domain(module: str) -> bool:
    return module.startswith(("moldiff.molecules", "physics"))


def upward(src: str, dst: str) -> str | None:
    """The contract an arrow ``src -> dst`` breaks, or ``None``."""
    if src.startswith("moldiff") and not _domain(src) and _domain(dst):
        return "core -> domain"
    if src.startswith("moldiff.diffusion") and (dst.startswith("moldiff.training") or dst.split(".")[0] in
                                                ("mlflow", "rdkit")):
        return "diffusion -> training/MLflow/RDKit"
    if src.startswith("moldiff.nn") and dst.startswith(("moldiff.diffusion.samplers", "moldiff.diffusion.registry")):
        return "nn -> samplers"
    if src.startswith("physics") and dst.startswith("moldiff.molecules"):
        return "physics -> molecules"
    return None


def _circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10_000)

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in list(edges):
        if v not in index:
            strong(v)
    return out


def _duplicates(root: Path) -> int | None:
    exe = shutil.which("duplicates")
    if exe is None:
        return None
    res = subprocess.run([exe, "--repo", str(root), "--most", "1", "--seconds", "120"], capture_output=True, text=True)
    first = res.stdout.strip().splitlines()[0] if res.stdout.strip() else ""
    words = first.split()
    return 0 if first.startswith("no duplicates") else int(words[0]) if words and words[0].isdigit() else None


def measure(root: Path) -> dict:
    mods = read_tree(root)
    module_edges: dict[str, set[str]] = {}
    all_edges: dict[str, set[str]] = {}  # with the imports inside functions
    ups = []
    for src, info in mods.items():
        for target, level in info["imports"]:
            dst = _own(target, mods)
            external = target.split(".")[0] in ("mlflow", "rdkit")
            if dst is None and not external:
                continue
            dst = dst or target
            if dst == src or src.startswith(dst + ".") and dst in mods and mods[dst]["file"].endswith("__init__.py"):
                continue  # a package's own modules / itself
            broken = upward(src, dst)
            if broken:
                ups.append((src, dst, broken, level))
            if dst in mods:
                all_edges.setdefault(src, set()).add(dst)
                if level == "module":
                    module_edges.setdefault(src, set()).add(dst)
    # function-level imports of the project's own modules, as statements
    func_statements = 0
    for info in mods.values():
        tree = ast.parse((root / info["file"]).read_text(errors="replace"))
        for fn in ast.walk(tree):
            if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
                for node in ast.walk(fn):
                    if isinstance(node, ast.ImportFrom) and (node.level or (node.module or "").split(".")[0] in PACKAGES):
                        func_statements += 1
                    elif isinstance(node, ast.Import) and any(a.name.split(".")[0] in PACKAGES for a in node.names):
                        func_statements += 1
    circles, circles_all = _circles(module_edges), _circles(all_edges)
    sizes = sorted(((info["lines"], info["file"]) for info in mods.values()), reverse=True)[:5]
    uniq_up = sorted({(s, d, b) for s, d, b, _ in ups})
    return {"modules": len(mods), "arrows": sum(len(v) for v in module_edges.values()),
            "circles": len(circles), "modules_in_circles": sum(len(c) for c in circles),
            "circle_examples": [c[:6] for c in circles[:3]],
            "circles_with_function_imports": len(circles_all),
            "modules_in_circles_with_function_imports": sum(len(c) for c in circles_all),
            "circle_examples_with_function_imports": [c[:6] for c in circles_all[:3]],
            "upward_arrows": len(uniq_up), "upward_by_contract": dict(Counter(b for _, _, b in uniq_up)),
            "upward_examples": [f"{s} -> {d}" for s, d, _ in uniq_up[:5]],
            "function_level_own_imports": func_statements, "duplicate_pairs": _duplicates(root),
            "largest_files": [{"file": f, "lines": n} for n, f in sizes]}


def _checkout(rev: str) -> Path:
    tmp = Path(tempfile.mkdtemp(prefix="import_graph_"))
    subprocess.run(["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tmp), rev], check=True,
                   capture_output=True)
    return tmp


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--rev", default=None, help="a commit (default: the working tree)")
    m.add_argument("--label", default=None)
    sub.add_parser("table")
    a = ap.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    if a.cmd == "measure":
        root = ROOT if a.rev is None else _checkout(a.rev)
        try:
            rec = measure(root)
        finally:
            if a.rev is not None:
                subprocess.run(["git", "-C", str(ROOT), "worktree", "remove", "--force", str(root)], check=False)
        label = a.label or a.rev or "working tree"
        rev = a.rev or subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                                      text=True).stdout.strip() + "+"
        rec.update(label=label, rev=rev, machine=machine())
        (OUT / f"{label.replace(' ', '_')}.json").write_text(json.dumps(rec, indent=1) + "\n")
        print(json.dumps(rec, indent=1))
        return
    recs = [json.loads(p.read_text()) for p in sorted(OUT.glob("*.json"))]
    recs.sort(key=lambda r: r["label"] != "before")
    rows = [("modules", "modules"), ("module-level arrows", "arrows"), ("circles (module-level arrows)", "circles"),
            ("circles (with imports inside functions)", "circles_with_function_imports"),
            ("modules in those circles", "modules_in_circles_with_function_imports"), ("upward arrows", "upward_arrows"),
            ("function-level imports of own modules", "function_level_own_imports"),
            ("duplicate pairs (6+ lines)", "duplicate_pairs")]
    lines = ["# The import graph before and after the frame was straightened", "",
             "Made by `python -m benchmarks.import_graph` (module docstring: what counts as an arrow, a circle, an "
             "upward arrow).", "",
             "| | " + " | ".join(f"{r['label']} (`{r['rev']}`)" for r in recs) + " |",
             "|---|" + "---|" * len(recs)]
    for title, key in rows:
        lines.append(f"| {title} | " + " | ".join(str(r.get(key)) for r in recs) + " |")
    lines.append("| largest files (lines) | " + " | ".join(
        "<br>".join(f"{f['file']} {f['lines']}" for f in r["largest_files"]) for r in recs) + " |")
    lines.append("| upward arrows by contract | " + " | ".join(
        ", ".join(f"{k}: {v}" for k, v in r["upward_by_contract"].items()) or "none" for r in recs) + " |")
    lines += ["", "Examples (first of each):"]
    for r in recs:
        lines.append(f"- {r['label']}: circles {r['circle_examples_with_function_imports'][:1] or 'none'}; upward "
                     f"{r['upward_examples'][:2] or 'none'}")
    (RESULTS / "import_graph.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
