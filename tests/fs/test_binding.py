"""binding.check_callbacks: a misspelled FUSE handler is refused before anything mounts,
wherever in the class hierarchy it is defined. Nothing mounts here."""

import os

import pytest


@pytest.fixture(scope="module")
def binding():
    # Importing the binding may set FUSE_LIBRARY_NAME; leave this process's environment as it was.
    saved = dict(os.environ)
    from tdxfs.server import binding

    os.environ.clear()
    os.environ.update(saved)
    return binding


@pytest.fixture(scope="module")
def adapter(binding):
    from tdxfs.server import adapter

    return adapter


@pytest.fixture(scope="module")
def served(binding, adapter):
    """The class ``adapter.operations`` serves with this binding (libfuse3: FlushingOperations)."""
    return adapter.FlushingOperations if binding.HAS_NOFLUSH else adapter.TdxfsOperations


def bare(cls):
    """An instance without running __init__: the check looks at classes and fields only."""
    return object.__new__(cls)


def test_the_served_class_passes(binding, served):
    binding.check_callbacks(bare(served))


def test_a_misspelled_handler_in_a_base_class_is_refused(binding, adapter):
    # The shape of the libfuse3 case: the served class defines only flush itself, and the
    # handlers live in its base, where the misspelling is.
    class Base(adapter.TdxfsOperations):
        def raedir(self, path, fh):
            return [".", ".."]

    class Served(Base):
        def flush(self, path, fi):
            return 0

    assert "raedir" not in vars(Served)
    with pytest.raises(TypeError, match=r"Base\.raedir is not a FUSE callback"):
        binding.check_callbacks(bare(Served))


def test_a_misspelled_handler_in_the_class_itself_is_refused(binding, served):
    class Served(served):
        def raedir(self, path, fh):
            return [".", ".."]

    with pytest.raises(TypeError, match=r"Served\.raedir"):
        binding.check_callbacks(bare(Served))


def test_private_helpers_and_settings_are_not_callbacks(binding, served):
    class Served(served):
        use_ns = True

        def _helper(self):
            return None

    binding.check_callbacks(bare(Served))


def test_a_field_named_like_a_callback_is_refused(binding, served):
    ops = bare(served)
    ops.read = None  # would shadow the read handler
    with pytest.raises(TypeError, match="field named like a FUSE callback: read"):
        binding.check_callbacks(ops)


def test_serve_checks_before_mounting(binding, served, tmp_path):
    class Served(served):
        def raedir(self, path, fh):
            return [".", ".."]

    with pytest.raises(TypeError, match="raedir"):
        binding.serve(bare(Served), str(tmp_path), mounted=lambda: False)
