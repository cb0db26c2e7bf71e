"""Rows and records (:mod:`daemon.store.rows`): the columns are the record's fields."""

from __future__ import annotations

import enum
from decimal import Decimal

import attrs
import pytest

from daemon.store.rows import FLAG, Conversion, RowCodec, by_value, nullable


class Colour(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Thing:
    name: str
    colour: Colour
    size: Decimal | None = None
    shiny: bool | None = None


THINGS = RowCodec(
    Thing,
    {
        "colour": by_value(Colour),
        "size": nullable(Conversion(load=Decimal, dump=str)),
        "shiny": nullable(FLAG),
    },
)


def test_the_columns_are_the_fields_in_order() -> None:
    assert THINGS.columns == ("name", "colour", "size", "shiny")


def test_a_record_survives_a_round_trip_through_its_row() -> None:
    dump = THINGS.dumper()
    for thing in (Thing("a", Colour.RED, Decimal("0.10"), True), Thing("b", Colour.BLUE)):
        row = dump(thing)
        assert THINGS.load(row) == thing
    assert dump(Thing("a", Colour.RED, Decimal("0.10"), False)) == ("a", "red", "0.10", 0)
    assert dump(Thing("b", Colour.BLUE)) == ("b", "blue", None, None)


def test_a_dumper_of_some_columns_gives_them_in_the_order_asked() -> None:
    dump = THINGS.dumper(["shiny", "colour"])
    assert dump(Thing("a", Colour.RED, shiny=True)) == (1, "red")


def test_unknown_names_are_refused() -> None:
    with pytest.raises(ValueError, match="no field"):
        RowCodec(Thing, {"weight": FLAG})
    with pytest.raises(ValueError, match="no field"):
        THINGS.dumper(["weight"])


def test_a_row_of_another_length_is_refused() -> None:
    with pytest.raises(ValueError):
        THINGS.load(("a", "red", None))
