"""The kernel transport's opcode table is checked against the dispatcher's handlers when
the module loads: a misspelled name on either side is refused. No mount."""

import pytest

from tdxfs.server.kernel.dispatch import OPS, Dispatcher, check_table
from tdxfs.server.kernel.protocol import Opcode


def test_the_real_table_passes():
    check_table(Dispatcher, OPS)


def test_a_row_naming_a_misspelled_handler_is_refused():
    table = {**OPS, Opcode.READDIR: ("_raedir", "readdir", None)}
    with pytest.raises(TypeError, match=r"READDIR names Dispatcher\._raedir, which does not exist"):
        check_table(Dispatcher, table)


def test_a_handler_no_row_names_is_refused():
    class Misspelled(Dispatcher):
        def _raedir(self, nodeid, body):
            return b""

    with pytest.raises(TypeError, match=r"Misspelled\._raedir looks like a handler"):
        check_table(Misspelled, OPS)


def test_a_row_that_is_not_an_opcode_is_refused():
    with pytest.raises(TypeError, match="is not an Opcode"):
        check_table(Dispatcher, {**OPS, 9999: ("_getattr", "getattr", None)})
