"""The layers, as docs/architecture.md draws them and BUILD declares them, read from the code's own imports.

- tf_mlperf/base imports nothing else of ours; data_prep reaches the training side only through it, and the
  training side (core, resnet, bert, inference, launch, score, demo) never imports data_prep.
- Every import of one of our modules is covered by the deps of the Bazel target that holds the importing file
  (BUILD evaluated as the Python subset it is), so BUILD says what the code does.
- No module of tf_mlperf/ is longer than LONGEST lines.
"""
from __future__ import annotations

import ast
import fnmatch
import pathlib

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
LONGEST = 420        # "no module over ~400 lines" (issue #26)
OURS = ("tf_mlperf", "data_prep")


def modules() -> dict[str, pathlib.Path]:
    found = {}
    for top in OURS:
        for path in (REPO / top).rglob("*.py"):
            parts = path.relative_to(REPO).with_suffix("").parts
            found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: pathlib.Path, known: dict[str, pathlib.Path]) -> set[str]:
    """Our modules that `path` imports, anywhere in it (lazy imports inside functions count too)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n.split(".")[0] in OURS and n in known}


def layer(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "data_prep":
        return "data_prep"
    return parts[1] if len(parts) > 1 and (REPO / "tf_mlperf" / parts[1]).is_dir() else "tf_mlperf"


def test_base_is_the_only_way_between_data_prep_and_the_training_side():
    known = modules()
    wrong = []
    for module, path in known.items():
        for target in imports(path, known):
            here, there = layer(module), layer(target)
            if here == "base" and there != "base":
                wrong.append(f"{module} (base) imports {target}")
            elif here == "data_prep" and there not in ("data_prep", "base"):
                wrong.append(f"{module} (data_prep) imports {target}: go through tf_mlperf.base")
            elif here not in ("data_prep", "base") and there == "data_prep":
                wrong.append(f"{module} ({here}) imports {target}: data_prep is a one-off job, not a library")
    assert not wrong, "\n".join(wrong)


def build_targets() -> dict[str, dict]:
    """BUILD's targets: name -> {"srcs": [repo paths], "deps": [names]} (Starlark read as Python, globs real)."""
    targets = {}

    def glob(patterns, exclude=()):
        out = []
        for pattern in patterns:
            out += sorted(str(p.relative_to(REPO)) for p in REPO.glob(pattern) if p.is_file())
        return [p for p in out if not any(fnmatch.fnmatch(p, e) for e in exclude)]

    def rule(kind):
        def add(name, srcs=(), deps=(), **_):
            targets[name] = {"kind": kind, "srcs": list(srcs), "deps": [d.lstrip(":") for d in deps]}
        return add
    exec(compile((REPO / "BUILD").read_text(), "BUILD", "exec"),   # pylint: disable=exec-used
         {"glob": glob, "py_library": rule("py_library"), "py_binary": rule("py_binary"),
          "py_test": rule("py_test"), "package": lambda **_: None})
    return targets


def owners(targets: dict[str, dict], kinds=("py_library", "py_binary", "py_test")) -> dict[str, str]:
    """Each product source -> the first target of those kinds that lists it (tests/ files belong to none)."""
    owner: dict[str, str] = {}
    for name, target in targets.items():
        if target["kind"] in kinds:
            for src in target["srcs"]:
                if not src.startswith("tests/"):
                    owner.setdefault(src, name)
    return owner


def test_every_library_dep_is_one_the_code_imports():
    """BUILD says no more than the code does: a library's dep that none of its files imports (a stale arrow, such
    as a training-side target still listing a data_prep one) is wrong. Binaries and tests may carry more (the
    demo runs the data_prep jobs as programs)."""
    targets, known = build_targets(), modules()
    owner = owners(targets, kinds=("py_library",))
    stale = []
    for name, target in targets.items():
        if target["kind"] != "py_library":
            continue
        used = {owner.get(str(known[t].relative_to(REPO))) for src in target["srcs"] if src.endswith(".py")
                for t in imports(REPO / src, known)}
        stale += [f":{name} lists :{dep}, which none of its files imports" for dep in target["deps"]
                  if dep not in used]
    assert not stale, "\n".join(stale)


def test_build_deps_cover_every_import():
    targets, known = build_targets(), modules()
    owner = owners(targets)

    def closure(name, seen=None):
        seen = set() if seen is None else seen
        if name not in seen:
            seen.add(name)
            for dep in targets[name]["deps"]:
                closure(dep, seen)
        return seen
    missing, unowned = [], []
    for module, path in known.items():
        src = str(path.relative_to(REPO))
        if src not in owner:
            unowned.append(src)
            continue
        reach = {s for t in closure(owner[src]) for s in targets[t]["srcs"]}
        for target in imports(path, known):
            target_src = str(known[target].relative_to(REPO))
            if target_src not in reach:
                missing.append(f"{src} ({owner[src]}) imports {target} ({owner.get(target_src, 'no target')}): "
                               "add the dep in BUILD")
    assert not unowned, f"modules in no BUILD target: {unowned}"
    assert not missing, "\n".join(missing)


@pytest.mark.parametrize("path", sorted((REPO / "tf_mlperf").rglob("*.py")), ids=lambda p: str(p.relative_to(REPO)))
def test_no_module_of_tf_mlperf_is_a_house_of_its_own(path):
    lines = len(path.read_text().splitlines())
    assert lines <= LONGEST, f"{path.relative_to(REPO)}: {lines} lines; split it by concern (issue #26)"
