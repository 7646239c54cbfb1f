"""The whole tree over one TD, and the path operations a front end maps onto it.

``Tree.for_td`` builds it: the root rows (``rows``, ``eventlog``), ``tsm/`` (configfs),
``measurements/`` (tsm-mr) and ``acpi/`` (the CCEL views); every directory checks its
table as it is built. Nothing here imports FUSE: the adapter maps a path and an operation
onto :class:`Tree` and turns a raised ``TdxfsError`` into its errno.
"""

from typing import Dict, Iterator, Optional, Tuple

from tdxfs.errors import IsADirectory, NoSuchEntry, TdxfsError
from tdxfs.files.acpi import acpi_dir
from tdxfs.files.configfs import tsm_tree
from tdxfs.files.eventlog import eventlog_row
from tdxfs.files.measurements import measurements_dir
from tdxfs.files.nodes import Directory, Handle, Node
from tdxfs.files.rows import root_rows, stats_row
from tdxfs.files.stats import RequestCounter
from tdxfs.model.td import TrustDomain


class Tree:
    """Path lookup and the operations a front end maps onto; every refusal is a TdxfsError."""

    def __init__(self, root: Directory, requests: Optional[RequestCounter] = None):
        self.root = root
        self.requests = requests or RequestCounter()

    @classmethod
    def for_td(cls, td: TrustDomain, server: Optional[Dict[str, str]] = None) -> "Tree":
        requests = RequestCounter(server)
        root = Directory("", (*root_rows(td), eventlog_row(td), stats_row(requests), tsm_tree(td.quote),
                              measurements_dir(td), acpi_dir(td.event_log)))
        return cls(root, requests)

    def kind(self, path: Optional[str]) -> str:
        """What /.stats counts a request for ``path`` under: the node's kind, else what its
        directory calls an absent name ("missing" unless it says otherwise)."""
        try:
            return self.lookup(path).kind
        except TdxfsError:
            pass
        try:
            parent, _ = self._parent(path)
        except TdxfsError:
            return "missing"
        return getattr(parent, "absent_kind", "missing")

    def lookup(self, path: Optional[str]) -> Node:
        if path is None:  # libfuse's answer for an open file whose directory was removed
            raise NoSuchEntry("the file's directory was removed")
        node: Node = self.root
        for part in filter(None, path.split("/")):
            if not isinstance(node, Directory):
                raise NoSuchEntry(f"{path}: not a directory on the way")
            node = node.child(part)
        return node

    def _parent(self, path: Optional[str]) -> Tuple[Directory, str]:
        if path is None:
            raise NoSuchEntry("the file's directory was removed")
        head, _, name = path.rstrip("/").rpartition("/")
        parent = self.lookup(head)
        if not isinstance(parent, Directory):
            raise NoSuchEntry(f"{head}: not a directory")
        return parent, name

    def _file(self, path: str) -> Node:
        node = self.lookup(path)
        if isinstance(node, Directory):
            raise IsADirectory(f"{path} is a directory")
        return node

    def attrs(self, path: str) -> Dict[str, int]:
        return self.lookup(path).attrs()

    def listdir(self, path: str) -> Iterator[str]:
        node = self.lookup(path)
        if not isinstance(node, Directory):
            raise NoSuchEntry(f"{path} is not a directory")
        return node.names()

    def open(self, path: str, flags: int) -> Handle:
        return self._file(path).open(flags)

    def truncate(self, path: str, length: int) -> None:
        self._file(path).truncate(length)

    def mkdir(self, path: str) -> None:
        parent, name = self._parent(path)
        parent.make_dir(name)

    def rmdir(self, path: str) -> None:
        parent, name = self._parent(path)
        parent.remove_dir(name)

    def refuse(self, what: str, path: Optional[str] = None) -> None:
        """Creating, removing, renaming, linking, chmod: not part of this interface. The
        directory ``path`` is in answers (configfs answers a create with EACCES)."""
        try:
            parent, _ = self._parent(path)
        except TdxfsError:
            parent = self.root
        parent.refuse(what)
