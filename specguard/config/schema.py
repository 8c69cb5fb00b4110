"""What the pydantic models of the suite's files share: errors that read ``<file>: <field>:
expected <what>, got <value>`` (:func:`specguard.config.errors.from_validation` adds the file and
the value), strict number and string types, and objects that refuse unknown keys by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, ClassVar

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, WrapValidator, model_validator
from pydantic_core import PydanticCustomError

# An error reads ``<file>: <field>: expected <what>, got <value>``; from_validation adds the value.

def error_at(loc: tuple[str | int, ...], message: str, value: Any, kind: str = "specguard") -> ValidationError:
    """An error at ``loc`` below the value a validator checks (pydantic prefixes that value's location)."""
    return ValidationError.from_exception_data("specguard", [
        {"type": PydanticCustomError(kind, message), "loc": loc, "input": value}])


def reword(message: str) -> WrapValidator:
    """Whatever is wrong with a leaf value (its type, range or items), the error says ``message``."""
    def validate(value: Any, handler: Callable[[Any], Any]) -> Any:
        try:
            return handler(value)
        except ValidationError:
            raise PydanticCustomError("specguard", message) from None
    return WrapValidator(validate)


def expect(what: str) -> WrapValidator:
    return reword(f"expected {what}")


def must_be(check: Callable[[Any], bool], what: str) -> BeforeValidator:
    """A container's own check, made before its items are validated (their errors keep their locations)."""
    def validate(value: Any) -> Any:
        if not check(value):
            raise PydanticCustomError("specguard", f"expected {what}")
        return value
    return BeforeValidator(validate)


def _distinct(values: list[Any]) -> list[Any]:
    if len(set(values)) != len(values):
        raise ValueError("repeated items")
    return values


Float = Annotated[float, Field(strict=True, allow_inf_nan=False)]   # an int is read as a float; a bool is not
Int = Annotated[int, Field(strict=True)]                             # nor a bool or a float as an int
Str = Annotated[str, Field(strict=True)]
Name = Annotated[str, Field(strict=True, min_length=1)]
Distinct = AfterValidator(_distinct)


class Schema(BaseModel):
    """A JSON object; anything else is refused with ``not_object``. Unknown keys are ignored, or, with
    ``extra="forbid"`` (:class:`Closed`), refused at their own location with the allowed keys."""

    model_config = ConfigDict(extra="ignore")
    not_object: ClassVar[str] = "expected an object"
    unknown_key: ClassVar[str] = "unknown key (allowed: {allowed})"

    @model_validator(mode="before")
    @classmethod
    def _an_object_with_known_keys(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise PydanticCustomError("specguard", cls.not_object)
        if cls.model_config.get("extra") == "forbid":
            for key in data:
                if key not in cls.model_fields:
                    allowed = ", ".join(sorted(cls.model_fields))
                    raise error_at((key,), cls.unknown_key.format(allowed=allowed), data[key])
        return data


class Closed(Schema):
    model_config = ConfigDict(extra="forbid")
