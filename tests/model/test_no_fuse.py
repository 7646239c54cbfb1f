"""The model package stands alone: no FUSE binding is needed or imported."""

import os
import pkgutil
import subprocess
import sys
import textwrap

import tdxfs.model

MODEL_DIR = os.path.dirname(tdxfs.model.__file__)
# Every module and package under tdxfs.model, the abi package's table modules included.
MODEL_MODULES = sorted(m.name for m in pkgutil.walk_packages(tdxfs.model.__path__, "tdxfs.model."))

# Every FUSE binding import fails in the child, as if none were installed; the model is
# then exercised end to end and the child lists any module whose name mentions fuse.
CHILD = textwrap.dedent("""
    import importlib, sys, tempfile
    BLOCKED = ("fuse", "mfusepy", "fusepy", "refuse", "llfuse", "pyfuse3")

    class NoFuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED:
                raise ImportError(f"FUSE binding {name} is not installed (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoFuse())
    for name in sys.argv[1:]:
        importlib.import_module(name)

    from tdxfs.model.profile import default_profile
    from tdxfs.model.state import StateDir
    with tempfile.TemporaryDirectory() as d:
        st = StateDir(d)
        td = st.open_td(default_profile())
        td.extend(3, bytes(48))
        assert td.verify_report(td.report(bytes(64))).ok
        st.close()
    print(" ".join(sorted(m for m in sys.modules if "fuse" in m.lower())) or "none")
""")


def test_model_modules_import_and_run_without_any_fuse_binding():
    assert {"tdxfs.model.abi", "tdxfs.model.abi.layout", "tdxfs.model.profile", "tdxfs.model.td",
            "tdxfs.model.state"} <= set(MODEL_MODULES)
    proc = subprocess.run([sys.executable, "-c", CHILD, "tdxfs.errors", *MODEL_MODULES],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "none"


def test_model_is_a_regular_package_that_setuptools_ships():
    """setup.cfg uses packages = find:, which only finds directories with __init__.py."""
    from setuptools import find_packages

    root = os.path.dirname(os.path.dirname(MODEL_DIR))
    assert {"tdxfs.model", "tdxfs.model.abi"} <= set(find_packages(root, include=["tdxfs", "tdxfs.*"]))
