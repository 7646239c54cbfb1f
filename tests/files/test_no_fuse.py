"""The files layer and its tests stand without FUSE: ``tox -e nofuse`` runs tests/files with
no binding installed, and this test says so even where one is installed."""

import os
import subprocess
import sys
import textwrap

import tdxfs.files
import tests.files

FILES_DIR = os.path.dirname(tdxfs.files.__file__)
TESTS_DIR = os.path.dirname(tests.files.__file__)


def modules(package: str, directory: str):
    return sorted(f"{package}.{name[:-3]}" for name in os.listdir(directory)
                  if name.endswith(".py") and name != "__init__.py")


# Every FUSE binding import fails in the child, as if none were installed; the tree is then
# built and served, and the child lists any FUSE package or tdxfs.server module it loaded.
CHILD = textwrap.dedent("""
    import importlib, os, sys
    BLOCKED = ("fuse", "mfusepy", "fusepy", "refuse", "llfuse", "pyfuse3")

    class NoFuse:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in BLOCKED or name == "tdxfs.server.binding":
                raise ImportError(f"{name} is not importable here (blocked by the test)")
            return None

    sys.meta_path.insert(0, NoFuse())
    for name in sys.argv[1:]:
        importlib.import_module(name)

    from tdxfs.files.tree import Tree
    from tdxfs.model.machine import in_memory_td
    from tdxfs.model.profile import default_profile
    tree = Tree.for_td(in_memory_td(default_profile()))
    h = tree.open("/rtmr3", os.O_RDWR)
    h.write(bytes(48), 0)
    assert len(h.read(4096, 0)) == 97
    h.release()
    loaded = [m for m in sys.modules if m.startswith("tdxfs.server") or "fuse" in m.split(".")[0].lower()]
    print(" ".join(sorted(loaded)) or "none")
""")


def test_the_files_layer_and_its_tests_import_and_run_without_any_fuse_binding():
    names = [*modules("tdxfs.files", FILES_DIR), *modules("tests.files", TESTS_DIR)]
    assert {"tdxfs.files.nodes", "tdxfs.files.rows", "tdxfs.files.tree", "tests.files.test_rows"} <= set(names)
    root = os.path.dirname(os.path.dirname(FILES_DIR))
    proc = subprocess.run([sys.executable, "-c", CHILD, *names], capture_output=True, text=True, timeout=120,
                          cwd=root)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "none"
