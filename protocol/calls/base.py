"""What every API call is made of: a frozen params model that names its result type.

::

    class SessionsList(Call[list[SessionInfo]]):
        method = "sessions.list"
        all: bool = False

The params model is what the technician's client sends and what the controller validates
before a handler sees it; the type argument is the result, checked by the client when the
reply arrives. Every call class registers itself in :data:`CALLS` under its ``method``.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, ClassVar, Generic, TypeVar

from annotated_types import GroupedMetadata
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    PlainSerializer,
    PlainValidator,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from protocol.durations import DurationError, parse_seconds

R = TypeVar("R")

#: every call by method name, filled as the call modules are imported (``protocol.calls``)
CALLS: dict[str, type[Call[Any]]] = {}


@dataclass(frozen=True)
class Doc:
    """How docs/protocol.md names a field type (``python -m controller.api.doc``); pydantic
    ignores it."""

    text: str


#: a time on the wire: ISO 8601 with its offset, as ``datetime.isoformat`` writes it
Time = Annotated[
    datetime, PlainSerializer(lambda value: value.isoformat(), return_type=str), Doc("time")
]


class Model(BaseModel):
    """Frozen, and strict about names: a misspelt field is an error, not a silent default."""

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class Call(Model, Generic[R]):
    """The parameters of one API method; ``R`` is the type of its result."""

    method: ClassVar[str]
    #: the result type, taken from ``Call[R]`` when the subclass is defined
    result_type: ClassVar[Any]
    _adapter: ClassVar[TypeAdapter[Any]]

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        method = cls.__dict__.get("method")
        if method is None:  # ``Call[X]`` itself, made by pydantic on the way
            return
        args = next(
            (
                metadata["args"]
                for base in cls.__mro__[1:]
                if (metadata := getattr(base, "__pydantic_generic_metadata__", {})).get("args")
            ),
            None,
        )
        if not args:
            raise TypeError(f"{cls.__name__} must name its result: class {cls.__name__}(Call[R])")
        if method in CALLS:
            raise TypeError(f"two calls named {method!r}: {CALLS[method].__name__}, {cls.__name__}")
        cls.result_type = args[0]
        cls._adapter = TypeAdapter(args[0])
        CALLS[method] = cls

    @model_validator(mode="before")
    @classmethod
    def _empty_is_absent(cls, data: Any) -> Any:
        # a command line's empty option and a script's null both mean "not given"
        if isinstance(data, dict):
            return {k: v for k, v in data.items() if v is not None and v != ""}
        return data

    def params(self) -> dict[str, Any]:
        """The parameters as they go on the wire."""
        return self.model_dump(mode="json", by_alias=True)

    @classmethod
    def dump_result(cls, result: R) -> Any:
        """A result of this call as JSON data for the reply."""
        return cls._adapter.dump_python(result, mode="json", by_alias=True)

    @classmethod
    def load_result(cls, data: Any) -> R:
        """A reply's result, checked against this call's result type."""
        result: R = cls._adapter.validate_python(data)
        return result


def explain(error: ValidationError, limit: int = 3) -> str:
    """A validation failure in a sentence that names each parameter at fault."""
    parts = []
    for detail in error.errors(include_url=False, include_input=False)[:limit]:
        where = ".".join(str(part) for part in detail["loc"]) or "params"
        message = detail["msg"].removeprefix("Value error, ")
        if detail["type"] == "extra_forbidden":
            message = "not a parameter of this call"
        parts.append(f"{where}: {message}")
    more = error.error_count() - limit
    if more > 0:
        parts.append(f"and {more} more")
    return "; ".join(parts)


# -- field types shared by many calls ---------------------------------------------------------

#: the largest id or count the store holds (a 64-bit signed integer)
ID_MAX = 2**63 - 1


def _no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("contains a NUL character")
    return value


class Text(GroupedMetadata):
    """Text: stripped, not empty, at most ``limit`` characters, no NUL.

    ``name: Annotated[str, Text(100)]``; optional: ``Annotated[str, Text(200)] | None = None``
    (an empty string counts as not given: see :meth:`Call._empty_is_absent`).
    """

    def __init__(self, limit: int) -> None:
        self.limit = limit

    def __iter__(self) -> Iterator[Any]:
        yield StringConstraints(strip_whitespace=True, min_length=1, max_length=self.limit)
        yield AfterValidator(_no_nul)


def parse_id(value: object, prefix: str, what: str) -> int:
    """``PREFIX-<n>``, ``<n>`` or an int as a positive id the store can hold; else ValueError."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"not {what} id (expected {prefix}-<number>)")
    digits = str(value).strip().upper().removeprefix(f"{prefix}-")
    if (
        not (digits.isascii() and digits.isdigit())
        or len(digits) > 19
        or not 0 < int(digits) <= ID_MAX
    ):
        shown = repr(value) if len(str(value)) <= 40 else repr(str(value)[:40]) + "…"
        raise ValueError(f"not {what} id: {shown} (expected {prefix}-<number>)")
    return int(digits)


def id_parser(prefix: str, what: str) -> Any:
    """The field type of ``PREFIX-<n>`` ids: :func:`parse_id` in, ``PREFIX-<n>`` out."""

    def parse(value: object) -> int:
        return parse_id(value, prefix, what)

    return Annotated[
        int,
        PlainValidator(parse, json_schema_input_type=str | int),
        PlainSerializer(lambda number: f"{prefix}-{number}", return_type=str),
        Doc(f"{prefix}-N"),
    ]


#: ``T-12``, ``12`` or 12 on the way in; ``T-12`` on the wire
TicketId = id_parser("T", "a ticket")
#: ``KB-3``, ``3`` or 3 on the way in; ``KB-3`` on the wire
ArticleId = id_parser("KB", "an article")


#: the oldest age ``since`` takes, so that "now minus the age" is always a time
SINCE_MAX = timedelta(days=366_000)


def _since(value: object) -> timedelta | datetime:
    if isinstance(value, timedelta) and timedelta(0) < value <= SINCE_MAX:
        return value
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, str):
        text = value.strip()
        if not text.isdigit():  # 20260401 is a basic-format ISO date, not an age in seconds
            try:
                age = timedelta(seconds=parse_seconds(text))
            except (DurationError, OverflowError):
                pass
            else:
                if age <= SINCE_MAX:
                    return age
        try:
            moment = datetime.fromisoformat(text)
        except (ValueError, OverflowError):
            pass
        else:
            return moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
    raise ValueError(f"not a time or age: {shown} (an ISO time, or an age: 30m, 24h, 7d, 1d12h)")


def _since_text(value: timedelta | datetime) -> str:
    if isinstance(value, timedelta):
        return f"{int(value.total_seconds())}s"
    return value.isoformat()


#: an age (``30m``, ``24h``, ``7d``, ``1d12h``: :mod:`protocol.durations`) or an ISO time
#: (UTC unless it names its offset). An age stays an age on the wire: the controller's clock
#: says what it is ago (:func:`since_moment`).
Since = Annotated[
    timedelta | datetime,
    PlainValidator(_since, json_schema_input_type=str),
    PlainSerializer(_since_text, return_type=str),
    Doc("age or time"),
]


def since_moment(since: timedelta | datetime, now: datetime) -> datetime:
    """The time a :data:`Since` names, with ``now`` as the clock."""
    return now - since if isinstance(since, timedelta) else since


#: ``W-3``, ``3`` or 3 on the way in (results show a webhook's bare number, as the CLI takes it)
WebhookId = id_parser("W", "a webhook")
