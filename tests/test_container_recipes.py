"""container/Dockerfile and container/tf_mlperf.def: both install through `bash scripts/setup.sh --gpu` and name
only versions that agree with setup.cfg / scripts/setup.sh / TensorFlow's own CUDA 12 requirements (parsed from
those files and the installed TensorFlow's metadata, not written down here). No image is built: no container
daemon on CI (docs/containers.md)."""
import configparser
import importlib.metadata
import re

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet

from support.launch import REPO

DOCKERFILE = REPO / "container" / "Dockerfile"
DEF = REPO / "container" / "tf_mlperf.def"
RECIPES = [DOCKERFILE, DEF]


def instructions(path):
    """The recipe without comments, continuation lines joined."""
    lines = [line for line in path.read_text().splitlines() if not line.lstrip().startswith("#")]
    return re.sub(r"\\\n\s*", " ", "\n".join(lines))


def setup_cfg():
    cfg = configparser.ConfigParser()
    cfg.read(REPO / "setup.cfg")
    return cfg


def setup_sh_value(name):
    match = re.search(rf"^{name}=\$?\{{?[A-Z_]*:?-?([^}}\s]+)", (REPO / "scripts" / "setup.sh").read_text(), re.M)
    assert match, f"{name}= not found in scripts/setup.sh"
    return match.group(1)


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_installs_through_setup_sh_only(recipe):
    text = instructions(recipe)
    assert len(re.findall(r"\bbash scripts/setup\.sh --gpu\b", text)) == 1
    # nothing of its own: no pip, no Horovod / TensorFlow build steps outside the script
    assert not re.search(r"\bpip3? install|-m pip\b|HOROVOD_|horovod==|tensorflow", text), recipe
    # the repository is copied in and the script runs from it
    assert "/opt/tf_mlperf" in text


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_python_matches_setup(recipe):
    text = instructions(recipe)
    python = setup_sh_value("PY")                                   # python3.11
    assert re.fullmatch(r"python3\.\d+", python)
    named = set(re.findall(r"\bpython3\.\d+\b", text))
    assert named == {python}, (recipe, named, python)
    assert SpecifierSet(setup_cfg()["options"]["python_requires"]).contains(python[len("python"):] + ".0")


@pytest.mark.parametrize("recipe", RECIPES, ids=lambda p: p.name)
def test_recipe_cuda_matches_tensorflows_cuda_wheels(recipe):
    text = instructions(recipe)
    tags = re.findall(r"nvidia/cuda:\$?\{?(?:CUDA_VERSION\}?)?([\d.]*)-", text)
    versions = set(tags) - {""} | set(re.findall(r"ARG CUDA_VERSION=([\d.]+)", text))
    assert len(versions) == 1, (recipe, versions)
    cuda = versions.pop()
    # every toolkit path the recipe copies from is that release
    for path_version in re.findall(r"/usr/local/cuda-([\d.]+)/", text):
        assert cuda.startswith(path_version + "."), (recipe, path_version, cuda)
    # TensorFlow (the version setup.cfg pins) names its CUDA 12 runtime wheel; the compiler must be that release
    tf_pin = [r for r in setup_cfg()["options"]["install_requires"].split() if r.startswith("tensorflow==")][0]
    assert Requirement(tf_pin).specifier.contains(importlib.metadata.version("tensorflow"))
    runtime = [Requirement(r) for r in importlib.metadata.requires("tensorflow")
               if r.startswith("nvidia-cuda-runtime-cu12") and "and-cuda" in r]
    assert runtime, "tensorflow's and-cuda extra names no nvidia-cuda-runtime-cu12"
    assert runtime[0].specifier.contains(cuda), (recipe, cuda, runtime[0])


def test_both_recipes_name_the_same_versions():
    def named(path):
        text = instructions(path)
        return (set(re.findall(r"\bpython3\.\d+\b", text)), set(re.findall(r"debian:\w+", text)),
                set(re.findall(r"/usr/local/cuda-([\d.]+)/", text)))
    assert named(DOCKERFILE) == named(DEF)


def test_docs_give_build_and_run_lines():
    doc = (REPO / "docs" / "containers.md").read_text()
    for line in ("docker build -f container/Dockerfile", "apptainer build", "apptainer exec --nv",
                 "srun", "--container-image="):
        assert line in doc, line
