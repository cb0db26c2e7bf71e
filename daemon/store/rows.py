"""Stored rows and attrs records: a table's columns declared once, by its record class.

When a table's columns are a record's attrs fields (the same names, in the
same order), a :class:`RowCodec` over the record class gives the column list
and maps rows to records and back. Only the fields whose stored form differs
from the Python value name a :class:`Conversion` (an enum stored by its
value, a decimal as text, a flag as 0/1), so adding a column is one field on
the record plus one migration, and the SELECT list, the INSERT values and the
row mapping follow.

Backend-neutral: no SQL here; each backend's table modules build their
statements from :attr:`RowCodec.columns` and pick the conversions their
column types need.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Generic, TypeVar

import attrs
from attrs import AttrsInstance

__all__ = ["FLAG", "Conversion", "RowCodec", "by_value", "nullable"]

R = TypeVar("R", bound=AttrsInstance)


@attrs.frozen
class Conversion:
    """How one field is stored: ``dump`` makes the stored value, ``load`` reads it back."""

    load: Callable[[Any], object]
    dump: Callable[[Any], object]


def _value(member: enum.Enum) -> object:
    return member.value


def by_value(cls: type[enum.Enum]) -> Conversion:
    """An enum stored as its member's value."""
    return Conversion(load=cls, dump=_value)


def nullable(conversion: Conversion) -> Conversion:
    """``conversion`` for a field that may be ``None`` (stored as NULL)."""
    load, dump = conversion.load, conversion.dump
    return Conversion(
        load=lambda stored: None if stored is None else load(stored),
        dump=lambda value: None if value is None else dump(value),
    )


#: A bool stored as 0/1.
FLAG = Conversion(load=bool, dump=int)


class RowCodec(Generic[R]):
    """Rows of one table as records of ``record`` (whose fields are the columns).

    Args:
        record: An attrs class; its fields, in order, name the columns.
        conversions: By field name, for the fields not stored as they are.

    Raises:
        ValueError: a conversion names no field of ``record``.
    """

    def __init__(
        self, record: type[R], conversions: Mapping[str, Conversion] | None = None
    ) -> None:
        given = dict(conversions or {})
        #: The columns, in the record's field order.
        self.columns: tuple[str, ...] = tuple(field.name for field in attrs.fields(record))
        if unknown := sorted(set(given) - set(self.columns)):
            raise ValueError(f"{record.__name__} has no field(s) {unknown}")
        self._record = record
        self._fields = tuple((name, given.get(name)) for name in self.columns)

    def load(self, row: Sequence[Any]) -> R:
        """The record of a row that holds :attr:`columns` in order."""
        return self._record(
            **{
                name: stored if conversion is None else conversion.load(stored)
                for (name, conversion), stored in zip(self._fields, row, strict=True)
            }
        )

    def dumper(self, columns: Sequence[str] | None = None) -> Callable[[R], tuple[Any, ...]]:
        """A function giving a record's stored values of ``columns`` (all by default), in order.

        Raises:
            ValueError: a column is not one of :attr:`columns`.
        """
        names = self.columns if columns is None else tuple(columns)
        if unknown := sorted(set(names) - set(self.columns)):
            raise ValueError(f"{self._record.__name__} has no field(s) {unknown}")
        conversions = dict(self._fields)
        fields = tuple((name, conversions[name]) for name in names)

        def dump(record: R) -> tuple[Any, ...]:
            return tuple(
                getattr(record, name)
                if conversion is None
                else conversion.dump(getattr(record, name))
                for name, conversion in fields
            )

        return dump
