"""One encoder/decoder for every binary structure, driven by a table of rows per structure.

A :class:`Layout` is a fixed-size structure written as a table. Each row is
``(name, offset, what)``, where ``what`` is

* a byte count: that many bytes, shown as hex;
* ``U8``, ``U16``, ``U32`` or ``U64``: a little-endian unsigned integer;
* another Layout: that structure embedded whole, its rows named ``name.row`` (or keeping
  their own names when ``name`` is empty).

The rows must tile the structure: every byte in exactly one row. That is checked when the
Layout is made, so a mistyped offset fails at import, not in a report. A Layout offers
two views of the same bytes:

* by position, like :class:`struct.Struct`: ``pack(*values)``, ``unpack(data)``,
  ``unpack_from(data, offset)``, rows in offset order, integers as ints, the rest as bytes;
* by name: ``decode(data) -> {name: bytes}``, ``values(data) -> {name: int or bytes}``,
  ``encode({name: bytes or int}, base)``, ``as_json(data)``, and ``span(name)`` for where
  a row or an embedded structure sits.

A :class:`Record` strings Layouts and variable-length byte strings (:class:`Var`) whose
size an earlier integer row gives, such as a quote's QE auth data and PEM chain.

Nothing here knows TDX: the tables are in the sibling modules (``tdreport``, ``quote``,
``ccel``). Decoders refuse with ValueError; callers that promise another exception
translate it.
"""

import struct
from dataclasses import dataclass
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Set, Tuple, Union


@dataclass(frozen=True)
class Int:
    """A little-endian unsigned integer of ``size`` bytes (a row kind)."""

    size: int
    code: str  # its struct format character


U8, U16, U32, U64 = Int(1, "B"), Int(2, "H"), Int(4, "I"), Int(8, "Q")

Value = Union[bytes, bytearray, memoryview, int]


@dataclass(frozen=True)
class Field:
    """One row, its offset absolute in the structure that lists it."""

    name: str
    offset: int
    size: int
    integer: bool = False  # a little-endian integer (also shown as a number)

    @property
    def end(self) -> int:
        return self.offset + self.size

    @property
    def span(self) -> slice:
        return slice(self.offset, self.end)

    def get(self, data: bytes) -> bytes:
        return bytes(data[self.offset : self.end])

    def value(self, data: bytes) -> Union[int, bytes]:
        raw = self.get(data)
        return int.from_bytes(raw, "little") if self.integer else raw

    def raw(self, value: Value) -> bytes:
        """``value`` as this row's bytes: an int for an integer row, or exactly ``size`` bytes."""
        if isinstance(value, int) and not isinstance(value, bool):
            if not self.integer:
                raise ValueError(f"{self.name} is {self.size} bytes, not an integer")
            if not 0 <= value < 1 << (8 * self.size):
                raise ValueError(f"{self.name} ({self.size} bytes) cannot hold {value}")
            return value.to_bytes(self.size, "little")
        if not isinstance(value, (bytes, bytearray, memoryview)):
            raise ValueError(f"{self.name} takes bytes{' or an int' if self.integer else ''}")
        if len(value) != self.size:
            raise ValueError(f"{self.name} is {self.size} bytes, got {len(value)}")
        return bytes(value)


Row = Tuple[str, int, Union[int, Int, "Layout"]]


class LayoutError(Exception):
    """A table that does not describe a structure (rows overlap, leave a gap, repeat a name)."""


class Layout:
    """A fixed-size structure: ``Layout(name, size, *rows)``; see the module docstring."""

    def __init__(self, name: str, size: int, *rows: Row):
        self.name = name
        self.size = size
        leaves: List[Field] = []
        # embedded structures, their own included: (row name, Layout, absolute offset)
        self._parts: List[Tuple[str, "Layout", int]] = []
        for row in rows:
            label, offset, what = row
            if isinstance(what, Layout):
                prefix = f"{label}." if label else ""
                leaves += [Field(prefix + f.name, offset + f.offset, f.size, f.integer) for f in what.fields.values()]
                self._parts.append((label, what, offset))
                self._parts += [(prefix + sub if sub else "", layout, offset + at) for sub, layout, at in what._parts]
            elif isinstance(what, Int):
                leaves.append(Field(label, offset, what.size, True))
            elif isinstance(what, int) and not isinstance(what, bool):
                leaves.append(Field(label, offset, what))
            else:
                raise LayoutError(f"{name}: row {label!r} is neither a size, an integer kind nor a Layout")
        leaves.sort(key=lambda f: f.offset)
        self._check(leaves)
        self.fields: Dict[str, Field] = {f.name: f for f in leaves}
        self._labels = {label: (layout, at) for label, layout, at in self._parts if label}
        codes = [(_INT_CODES[f.size] if f.integer else f"{f.size}s") for f in leaves]
        self._typed = struct.Struct("<" + "".join(codes))
        self._raw = struct.Struct("<" + "".join(f"{f.size}s" for f in leaves))
        # By position, struct.Struct's own methods (no call in between: records are packed
        # in loops): rows in offset order, integers as ints, the rest as bytes.
        self.pack: Callable[..., bytes] = self._typed.pack
        self.unpack: Callable[[bytes], tuple] = self._typed.unpack
        self.unpack_from: Callable[..., tuple] = self._typed.unpack_from

    def _check(self, leaves: List[Field]) -> None:
        """Every byte in exactly one row, no name twice, integers of 1, 2, 4 or 8 bytes."""
        position, seen = 0, set()
        for f in leaves:
            if f.name in seen:
                raise LayoutError(f"{self.name}: two rows named {f.name!r}")
            seen.add(f.name)
            if f.size <= 0:
                raise LayoutError(f"{self.name}: row {f.name!r} has size {f.size}")
            if f.integer and f.size not in _INT_CODES:
                raise LayoutError(f"{self.name}: integer row {f.name!r} of {f.size} bytes")
            if f.offset < position:
                raise LayoutError(f"{self.name}: row {f.name!r} at {f.offset} overlaps the row before it")
            if f.offset > position:
                raise LayoutError(f"{self.name}: row {f.name!r} at {f.offset} leaves bytes {position}..{f.offset - 1} "
                                  "unnamed")
            position = f.end
        if position != self.size:
            raise LayoutError(f"{self.name}: rows end at {position}, the structure is {self.size} bytes")

    def __repr__(self) -> str:
        return f"<Layout {self.name} ({self.size} bytes)>"

    # -- by name ----------------------------------------------------------------------

    def span(self, name: Union[str, "Layout"]) -> slice:
        """Where a row, an embedded structure (by row name, or the Layout itself) sits."""
        if isinstance(name, Layout):
            places = [at for _, layout, at in self._parts if layout is name]
            if len(places) != 1:
                raise KeyError(f"{self.name} embeds {name.name} {len(places)} times")
            return slice(places[0], places[0] + name.size)
        if name in self.fields:
            return self.fields[name].span
        layout, at = self._labels[name]
        return slice(at, at + layout.size)

    def _check_size(self, data: bytes) -> None:
        if len(data) != self.size:
            raise ValueError(f"a {self.name} is {self.size} bytes, got {len(data)}")

    def decode(self, data: bytes) -> Dict[str, bytes]:
        """Every row's bytes by name (reserved rows included). ValueError for a wrong size."""
        self._check_size(data)
        return dict(zip(self.fields, self._raw.unpack(data)))

    def values(self, data: bytes, offset: int = 0) -> Dict[str, Union[int, bytes]]:
        """Every row by name, integers as ints; ``data`` holds the structure at ``offset``."""
        return dict(zip(self.fields, self._typed.unpack_from(data, offset)))

    def encode(self, fields: Mapping[str, Value] = {}, base: Optional[bytes] = None) -> bytes:
        """The rows named in ``fields`` placed over ``base`` (zeros by default); a name may
        also be an embedded structure's row name, given as its whole bytes. KeyError for a
        name the table lacks, ValueError for a value of the wrong size."""
        out = bytearray(self.size) if base is None else bytearray(base)
        if base is not None:
            self._check_size(out)
        for name, value in fields.items():
            field = self.fields.get(name)
            if field is None:
                layout, at = self._labels[name]
                field = Field(name, at, layout.size)
            out[field.offset : field.end] = field.raw(value)
        return bytes(out)

    def as_json(self, data: bytes) -> Dict[str, object]:
        """Rows by name: integers as numbers, the rest as hex. ValueError for a wrong size."""
        self._check_size(data)
        return {name: value.hex() if isinstance(value, bytes) else value
                for name, value in zip(self.fields, self._typed.unpack(data))}

    def names(self) -> Iterable[str]:
        """The names ``encode`` takes: every row and every embedded structure's row name."""
        return (*self.fields, *self._labels)

    def copier(self, source: "Layout", rows: Mapping[str, str]) -> Callable[[bytes], bytes]:
        """A function that builds this structure from a ``source`` structure's bytes, each of
        this table's rows copied from the ``source`` row ``rows`` maps it to. Every row must
        be mapped, to a row of the same size (checked now); the copy is one join."""
        if set(rows) != set(self.fields):
            raise LayoutError(f"{self.name} from {source.name}: rows {sorted(set(self.fields) ^ set(rows))} "
                              "unmapped or unknown")
        spans = []
        for name, field in self.fields.items():  # offset order: the join is the structure
            from_field = source.fields[rows[name]]
            if from_field.size != field.size:
                raise LayoutError(f"{self.name}.{name} ({field.size} bytes) from {source.name}.{from_field.name} "
                                  f"({from_field.size} bytes)")
            spans.append(from_field.span)
        spans_t = tuple(spans)

        def copy(data: bytes) -> bytes:
            return b"".join([data[s] for s in spans_t])

        return copy


_INT_CODES = {kind.size: kind.code for kind in (U8, U16, U32, U64)}


@dataclass(frozen=True)
class Var:
    """A byte string of a Record whose length is the integer row ``size`` before it."""

    name: str
    size: str


Part = Union[Layout, Tuple[str, Layout], Var]


class Record:
    """A structure of variable length: fixed Layouts (each optionally under a row name, as
    when embedded) and :class:`Var` byte strings, in order.

    ``rest`` names integer rows that hold the number of bytes after themselves to the end
    of the record (a quote's signature data length, its certification data size).
    :meth:`encode` fills in a Var's size row and a ``rest`` row that ``fields`` leaves out,
    and writes the ones given as given (a decoded record, tampered or not, encodes back to
    its own bytes).
    """

    def __init__(self, name: str, *parts: Part, rest: Tuple[str, ...] = ()):
        self.name = name
        self._parts: List[Union[Tuple[str, Layout], Var]] = []
        self.fields: Dict[str, Field] = {}  # the rows at fixed offsets, before the first Var
        self.integers: Set[str] = set()  # the names of every integer row, wherever it sits
        fixed, position = True, 0
        for part in parts:
            if isinstance(part, Var):
                if part.size not in self.integers:
                    raise LayoutError(f"{self.name}: {part.name} is sized by {part.size!r}, "
                                      "which is no integer row before it")
                fixed = False
                self._parts.append(part)
                continue
            label, layout = part if isinstance(part, tuple) else ("", part)
            prefix = f"{label}." if label else ""
            self._parts.append((prefix, layout))
            self.integers.update(prefix + f.name for f in layout.fields.values() if f.integer)
            if fixed:
                self.fields.update((prefix + f.name, Field(prefix + f.name, position + f.offset, f.size, f.integer))
                                   for f in layout.fields.values())
                position += layout.size
        self.fixed_size = position
        self.rest = rest
        for name in rest:
            if name not in self.fields or not self.fields[name].integer:
                raise LayoutError(f"{self.name}: {name!r} is not an integer row at a fixed offset")

    def decode(self, data: bytes) -> Dict[str, bytes]:
        """Every row and Var by name; bytes after the record are not part of it. ValueError
        when ``data`` ends inside the record."""
        out: Dict[str, bytes] = {}
        position = 0
        for part in self._parts:
            if isinstance(part, Var):
                size = int.from_bytes(out[part.size], "little")
                what = f"{part.name} ({size} bytes announced)"
            else:
                prefix, layout = part
                size, what = layout.size, f"{prefix.rstrip('.') or layout.name} ({layout.size} bytes)"
            if len(data) - position < size:
                raise ValueError(f"a {self.name} of {len(data)} bytes ends inside {what} at offset {position}")
            if isinstance(part, Var):
                out[part.name] = bytes(data[position : position + size])
            else:
                out.update(zip((prefix + n for n in layout.fields), layout._raw.unpack_from(data, position)))
            position += size
        return out

    def encode(self, fields: Mapping[str, Value]) -> bytes:
        """The record from its rows and Vars by name: rows not given are zero, Vars not
        given empty, size rows not given computed. KeyError for an unknown name."""
        fields = dict(fields)
        for part in self._parts:
            if isinstance(part, Var) and not isinstance(fields.get(part.name, b""), (bytes, bytearray, memoryview)):
                raise ValueError(f"{part.name} takes bytes")
        sizes = [len(fields.get(p.name, b"")) if isinstance(p, Var) else p[1].size for p in self._parts]
        for part, size in zip(self._parts, sizes):
            if isinstance(part, Var) and part.size not in fields:
                fields[part.size] = size
        for name in self.rest:
            if name not in fields:
                fields[name] = sum(sizes) - self.fields[name].end
        out = []
        for part in self._parts:
            if isinstance(part, Var):
                out.append(bytes(fields.pop(part.name, b"")))
            else:
                prefix, layout = part
                mine = {n: fields.pop(prefix + n) for n in layout.names() if prefix + n in fields}
                out.append(layout.encode(mine))
        if fields:
            raise KeyError(f"{self.name} has no row {sorted(fields)[0]!r}")
        return b"".join(out)
