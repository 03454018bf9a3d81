"""The structure the registries promise, checked on the source: the library never
imports the application, no code outside a variant's own module compares a
regularizer's, prior's or dataset's name with a literal, and the shared flags are
defined in one place."""

import ast
import os

from tests.helpers import REPO
from tf_dpvae import datasets, objectives, priors

LIBRARY = "tf_dpvae"
APPLICATION = ("trainers", "export")


def _sources(*folders):
    for folder in folders:
        for root, _, files in os.walk(os.path.join(REPO, folder)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(root, name)
                    with open(path) as f:
                        yield os.path.relpath(path, REPO), ast.parse(f.read(), path)


def test_library_never_imports_the_application():
    offenders = []
    for path, tree in _sources(LIBRARY):
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            offenders += [f"{path}: {n}" for n in names if n.split(".")[0] in APPLICATION]
    assert not offenders, offenders


def _literal_name_comparisons(tree, variant_names):
    """Comparisons of an attribute or name with a string literal naming a variant."""
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Compare):
            continue
        operands = [node.left, *node.comparators]
        literals = [o.value for o in operands
                    if isinstance(o, ast.Constant) and isinstance(o.value, str)]
        for operand in operands:
            if isinstance(operand, (ast.Tuple, ast.List, ast.Set)):
                literals += [e.value for e in operand.elts
                             if isinstance(e, ast.Constant) and isinstance(e.value, str)]
        hits = [v for v in literals if v in variant_names]
        if hits:
            found.append((node.lineno, hits))
    return found


def test_no_branch_on_a_variant_name_outside_its_module():
    names = set(objectives.REGULARIZERS) | set(priors.PRIORS) | set(datasets.names())
    # A variant's own module may name itself; data.py holds the dataset loaders.
    own = {os.path.join("tf_dpvae", "priors.py"), os.path.join("tf_dpvae", "datasets.py"),
           os.path.join("tf_dpvae", "data.py")}
    offenders = []
    for path, tree in _sources(LIBRARY, *APPLICATION):
        if path in own or path.startswith(os.path.join("tf_dpvae", "objectives")):
            continue
        offenders += [f"{path}:{line} {hits}"
                      for line, hits in _literal_name_comparisons(tree, names)]
    assert not offenders, offenders


def _flag_definitions():
    """{flag name: [file, ...]} of every absl DEFINE_* call with a literal name."""
    defined = {}
    for path, tree in _sources(LIBRARY, *APPLICATION):
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr.startswith("DEFINE_") and node.args
                    and isinstance(node.args[0], ast.Constant)):
                defined.setdefault(node.args[0].value, []).append(path)
    return defined


def test_shared_flags_are_defined_once():
    defined = _flag_definitions()
    for name in ("data_dir", "data_source", "dataset"):
        assert defined[name] == [os.path.join("trainers", "data_flags.py")], defined[name]
    # Every regularizer's and prior's settings are flags generated from the declarations.
    for _, spec in (objectives.all_settings() + priors.all_settings()
                    + datasets.all_settings()):
        assert spec.config_name not in defined, (spec.config_name, defined[spec.config_name])
