"""A declared hyperparameter (of a balancing method, or a benchmark's option) and the rule of its values.

A method declares each hyperparameter once, as a class attribute::

    class GeMTL(LossBalancing):
        p = HParam(1.0, Range(), "exponent of the generalized mean", buckets=(0, 1))

* the default's type is the hyperparameter's type (``1.0`` a float, ``1`` an integer, ``False`` a
  boolean, ``"none"`` a string; ``HParam[list[float]]([], ...)`` a list);
* ``self.p`` in the method reads the trial's value, and a type checker sees it with that type
  (``HParam`` is a descriptor: ``float`` here);
* the rule (:class:`Range`, :class:`OneOf`, :class:`Check`) both checks a value and writes the
  "allowed" text that every error about it (``p: invalid value ...; allowed: ...``) and the
  documentation show;
* ``buckets`` (numbers only, optional) are the edges at which the report's leaderboard gives the
  values a row of their own (GeMTL's ``p<0``, ``0<=p<1``, ``p>=1``).

The earlier form ``HParam(type, default, help, check, allowed)`` (a predicate and its text written
apart) is still accepted: benchmark options use it, and so may a user's plugin.
"""

from __future__ import annotations

import builtins
import math
from dataclasses import dataclass
from typing import Any, Callable, Generic, TypeVar, overload

T = TypeVar("T")


def _number(v: float) -> str:
    return f"{v:g}"


def _show(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return _number(v)
    return repr(v)


def _one_of(items: list[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} or {items[-1]}"


class Rule:
    """What values a hyperparameter takes: :meth:`check` tests one, :meth:`allowed` says which in words."""

    def check(self, value: Any) -> bool:  # pragma: no cover - interface
        raise NotImplementedError

    def allowed(self, kind: type) -> str:  # pragma: no cover - interface
        """The valid values in words (``kind``: the hyperparameter's type, e.g. "an integer" for int)."""
        raise NotImplementedError


@dataclass(frozen=True)
class Range(Rule):
    """Finite numbers within bounds: ``ge`` (>=) or ``gt`` (>) below, ``le`` (<=) or ``lt`` (<) above;
    no bound: any finite number.  ``Range(ge=0, lt=1)`` allows "a number in [0, 1)"."""

    ge: float | None = None
    gt: float | None = None
    le: float | None = None
    lt: float | None = None

    def __post_init__(self) -> None:
        if self.ge is not None and self.gt is not None or self.le is not None and self.lt is not None:
            raise ValueError("Range: give one lower bound (ge or gt) and one upper bound (le or lt)")

    def check(self, value: Any) -> bool:
        return (
            (self.ge is None or value >= self.ge)
            and (self.gt is None or value > self.gt)
            and (self.le is None or value <= self.le)
            and (self.lt is None or value < self.lt)
        )

    def allowed(self, kind: type) -> str:
        what = "an integer" if kind is int else "a number"
        low = ("[", ">=", self.ge) if self.ge is not None else ("(", ">", self.gt)
        high = ("]", "<=", self.le) if self.le is not None else (")", "<", self.lt)
        if low[2] is not None and high[2] is not None:
            return f"{what} in {low[0]}{_number(low[2])}, {_number(high[2])}{high[0]}"
        for _, op, bound in (low, high):
            if bound is not None:
                return f"{what} {op} {_number(bound)}"
        return "any integer" if kind is int else "any finite real number"


class OneOf(Rule):
    """One of the listed values: ``OneOf(0, 1, 2)`` allows "0, 1 or 2"."""

    def __init__(self, *values: Any):
        if not values:
            raise ValueError("OneOf needs at least one value")
        self.values = values

    def check(self, value: Any) -> bool:
        return value in self.values

    def allowed(self, kind: type) -> str:
        return _one_of([_show(v) for v in self.values])

    def __repr__(self) -> str:
        return f"OneOf{self.values!r}"


@dataclass(frozen=True)
class Check(Rule):
    """Any other rule: a predicate and the words that describe the values it accepts."""

    test: Callable[[Any], bool]
    text: str

    def check(self, value: Any) -> bool:
        return bool(self.test(value))

    def allowed(self, kind: type) -> str:
        return self.text


#: What any value of a type is, in words (a hyperparameter without a rule).
_ANY = {bool: "true or false", int: "any integer", float: "any finite real number", str: "any text", list: "a list"}


class HParam(Generic[T]):
    """One hyperparameter: default (its type is the hyperparameter's), rule, help; see the module doc.

    As a class attribute of a method it is a descriptor: on an instance it reads the instance's value
    (set by ``Balancing.__init__``), else the default; on the class it is this declaration.
    """

    name: str
    type: builtins.type
    default: Any
    help: str
    rule: Rule | None
    buckets: tuple[float, ...]

    @overload
    def __init__(
        self,
        type: builtins.type[T],
        default: T | None,
        help: str = "",
        check: Callable[[Any], bool] | None = None,
        allowed: str = "",
    ) -> None: ...

    @overload
    def __init__(
        self,
        default: T,
        rule: Rule | None = None,
        help: str = "",
        *,
        buckets: tuple[float, ...] = (),
    ) -> None: ...

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.name = ""
        if args and isinstance(args[0], builtins.type) or not args and "type" in kwargs:
            self._declare_checked(*args, **kwargs)
        else:
            self._declare(*args, **kwargs)

    def _declare(self, default: Any, rule: Rule | None = None, help: str = "", *, buckets: tuple[float, ...] = ()) -> None:
        if rule is not None and not isinstance(rule, Rule):
            raise TypeError(f"HParam({default!r}, rule, help): the rule is Range(...), OneOf(...) or Check(...), got {rule!r}")
        self.type, self.default, self.rule, self.help, self.buckets = builtins.type(default), default, rule, help, tuple(buckets)
        self._check: Callable[[Any], bool] | None = rule.check if rule is not None else None
        self._allowed = rule.allowed(self.type) if rule is not None else _ANY.get(self.type, "")

    def _declare_checked(
        self, type: builtins.type, default: Any, help: str = "", check: Callable[[Any], bool] | None = None, allowed: str = ""
    ) -> None:
        """The earlier form: ``HParam(type, default, help, check, allowed)``."""
        self.type, self.default, self.help, self.rule, self.buckets = type, default, help, None, ()
        self._check = check
        self._allowed = allowed or (_ANY.get(type, "") if check is None else "")

    @property
    def allowed(self) -> str:
        """The valid values in words, as errors and the documentation show them."""
        return self._allowed

    @property
    def check(self) -> Callable[[Any], bool] | None:
        """The predicate beyond the type (None: any value of the type)."""
        return self._check

    # ------------------------------------------------------------------ descriptor
    def __set_name__(self, owner: builtins.type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, obj: None, objtype: builtins.type | None = None) -> HParam[T]: ...

    @overload
    def __get__(self, obj: object, objtype: builtins.type | None = None) -> T: ...

    def __get__(self, obj: object | None, objtype: builtins.type | None = None) -> Any:
        if obj is None:
            return self
        return self.default  # an instance's own value is in its __dict__, found before this descriptor

    def __repr__(self) -> str:
        return f"HParam({self.name or '?'}: {self.type.__name__} = {self.default!r}; allowed: {self.allowed})"

    # ------------------------------------------------------------------ values
    def validate(self, name: str, value: Any) -> Any:
        """``value`` as this hyperparameter's type (an integer for a float, an integral float for an
        integer); a wrong type, a non-finite number or a value the rule refuses raises one
        ``ConfigError`` naming ``name`` and the allowed values."""
        from mtlsearch.errors import ConfigError

        also = f"; allowed: {self.allowed}" if self.allowed else ""
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if self.type is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, self.type) or isinstance(value, bool) and self.type is not bool:
            raise ConfigError(f"expected {self.type.__name__}, got {value!r}{also}", field=name)
        if isinstance(value, float) and not math.isfinite(value):
            raise ConfigError(f"must be a finite number, got {value!r}{also}", field=name)
        if self._check is not None and not self._check(value):
            raise ConfigError(f"invalid value {value!r}; allowed: {self.allowed}", field=name)
        return value

    def bucket_labels(self) -> list[str]:
        """The report's names of the buckets (``buckets=(0, 1)`` of ``p``: ``p<0``, ``0<=p<1``, ``p>=1``)."""
        edges = [_number(e) for e in self.buckets]
        if not edges:
            return []
        inner = [f"{a}<={self.name}<{b}" for a, b in zip(edges, edges[1:])]
        return [f"{self.name}<{edges[0]}", *inner, f"{self.name}>={edges[-1]}"]

    def bucket(self, value: Any) -> str:
        """The bucket ``value`` falls in ("" without buckets or for a value that is not a number)."""
        if not self.buckets or isinstance(value, bool) or not isinstance(value, (int, float)):
            return ""
        return self.bucket_labels()[sum(float(value) >= e for e in self.buckets)]


__all__ = ["Check", "HParam", "OneOf", "Range", "Rule"]
