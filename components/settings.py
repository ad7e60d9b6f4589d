"""Turn a YAML mapping into a component's config dataclass, refusing keys it does not know; and derive from that
dataclass the typed schema (a pydantic model) that steps and pipelines annotate their parameters with.

``from_dict`` is what the components use on the dicts they are handed (by steps, library users, tests).  A step's
parameters are checked earlier, when ZenML compiles the run, against the schema :func:`schema_of` derives from the
same dataclass (its fields, types and defaults; its ``__post_init__`` checks), with :func:`located` naming the
parameter's place in the YAML so that a refused value names its full key path (:class:`ConfigError`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")


def refuse_unknown(keys: Iterable[str], known: Iterable[str], *, where: str) -> None:
    """``ValueError`` naming ``where``, the keys outside ``known`` and the allowed ones, if there are any: the
    project's one unknown-key check."""
    known = sorted(known)
    unknown = sorted(set(keys) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown setting(s) {unknown}; allowed: {known}")


def from_dict(cls: type[T], values: dict[str, Any] | None, *, where: str) -> T:
    values = dict(values or {})
    refuse_unknown(values, (f.name for f in dataclasses.fields(cls)), where=where)
    for f in dataclasses.fields(cls):
        # YAML has no tuples; dataclasses that want one get it here.
        if f.name in values and isinstance(values[f.name], list) and "tuple" in str(f.type):
            values[f.name] = tuple(values[f.name])
    return cls(**values)


# ---- schemas: typed, checked settings derived from the config dataclasses ------------------------------------------
#
# A step (or pipeline) parameter annotated with ``located(schema, where)`` is checked by pydantic wherever ZenML
# validates parameters: when the run is compiled from the YAML (``BaseStep._validate_function_parameters`` ->
# ``EntrypointFunctionDefinition.validate_input``, before any step runs) and again when the step is called.  A
# refused value raises :class:`ConfigError`, which names every bad key by its full path.  The schema of a component's
# settings is generated from its config dataclass (:func:`schema_of`): the keys, their types and defaults come from
# the dataclass fields, the dataclass's own checks (``__post_init__``) run too, and only what the dataclass does not
# say (bounds, choices, keys filled in from the data) is stated beside it, by field name.


class ConfigError(Exception):
    """Config values a schema refused: ``errors`` lists (full key path, what is wrong).

    Deliberately not a ``ValueError``: raised inside pydantic validation it then propagates as is (pydantic wraps
    only ``ValueError``/``AssertionError`` into its ``ValidationError``), so ZenML's compile step surfaces this
    message, paths included, instead of its own generic "Input validation failed"."""

    def __init__(self, errors: list[tuple[str, str]]):
        self.errors = list(errors)
        lines = [f"{path}: {message}" for path, message in self.errors]
        super().__init__(lines[0] if len(lines) == 1 else f"{len(lines)} config errors:\n  " + "\n  ".join(lines))


def _pydantic():
    import pydantic  # noqa: F401  (kept out of the module's import time for the dataclass-only users)

    return pydantic


class Settings:
    """Marker base of the generated schema models (see :func:`schema_of`); the model class itself is built lazily
    so that this module imports nothing but the standard library when no schema is used."""


#: Union branch labels pydantic puts into an error's location (tags and type names): not part of the key path.
_BRANCH_LABELS: set[str] = {"bool", "int", "str", "float", "none", "list", "dict"}


def branch_label(label: str) -> str:
    """Register ``label`` as a union tag (left out of the key paths of errors)."""
    _BRANCH_LABELS.add(label)
    return label


def _strict_leaf(tp: Any, bounds: dict | None, choices: tuple | None) -> Any:
    import annotated_types as at
    from typing import Annotated, Literal

    from pydantic import Strict

    if choices is not None:
        return Literal[tuple(choices)]  # type: ignore[valid-type]
    extra = []
    for key, cls in (("gt", at.Gt), ("ge", at.Ge), ("lt", at.Lt), ("le", at.Le)):
        if bounds and key in bounds:
            extra.append(cls(bounds[key]))
    return Annotated[tp, Strict(), *extra]


def schema_type(tp: Any, *, bounds: dict | None = None, choices: tuple | None = None) -> Any:
    """The pydantic type of a dataclass field's type: scalars strict (no ``"ten"`` for an int, no ``2.5`` for an
    int, no ``"fast"`` for a float; an int is a float), containers as YAML gives them (a list for a tuple), a
    nested config dataclass as its schema; ``bounds`` (gt/ge/lt/le) and ``choices`` apply to the scalars."""
    import types
    import typing

    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if tp in (int, float, str, bool):
        return _strict_leaf(tp, bounds, choices)
    if tp is typing.Any or tp is object:
        return typing.Any
    if origin in (typing.Union, types.UnionType):
        members = tuple(schema_type(a, bounds=bounds, choices=choices) if a is not type(None) else type(None)
                        for a in args)
        return typing.Union[members]  # type: ignore[return-value]
    if origin in (list, typing.List):
        return list[schema_type(args[0], bounds=bounds, choices=choices) if args else typing.Any]
    if origin in (tuple, typing.Tuple):
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple[schema_type(args[0], bounds=bounds, choices=choices), ...]
        return tuple[tuple(schema_type(a, bounds=bounds, choices=choices) for a in args)]  # type: ignore[misc]
    if origin in (dict, typing.Dict) or tp is dict:
        key, value = args or (str, typing.Any)
        return dict[schema_type(key), schema_type(value)]
    if tp is list:
        return list
    if dataclasses.is_dataclass(tp):
        return schema_of(tp)
    raise TypeError(f"no schema for the field type {tp!r}")


def schema_of(cls: type, *, name: str | None = None, exclude: Iterable[str] = (), bounds: dict | None = None,
              choices: dict | None = None, fields: dict | None = None, check: Any = None,
              defaults: dict | None = None) -> type:
    """A pydantic model of the settings a user writes for the config dataclass ``cls``: one optional field per
    dataclass field (its type via :func:`schema_type`, its dataclass default shown as the default) except
    ``exclude`` (what the data or the pipeline fills in), unknown keys refused.

    ``bounds``: field -> {"gt"|"ge"|"lt"|"le": value}; ``choices``: field -> allowed values; ``fields``: extra
    fields (name -> (type, default)); ``defaults``: defaults other than the dataclass's (what the component fills
    in); ``check(values)``: the component's own parsing of the given values (the dataclass built from them), run
    after the types passed, whose ``ValueError`` is reported at the settings' path.  Every name in ``bounds``,
    ``choices`` and ``exclude`` must be a field of ``cls``: a renamed field fails here, not silently."""
    import typing

    pydantic = _pydantic()
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    exclude = set(exclude)
    for label, names in (("bounds", bounds or {}), ("choices", choices or {}), ("exclude", exclude),
                         ("defaults", defaults or {})):
        stray = set(names) - known
        if stray:
            raise TypeError(f"schema of {cls.__name__}: {label} names {sorted(stray)}, not fields of {cls.__name__}")
    definitions: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if f.name in exclude:
            continue
        tp = schema_type(hints[f.name], bounds=(bounds or {}).get(f.name), choices=(choices or {}).get(f.name))
        if defaults and f.name in defaults:
            default = pydantic.Field(default=defaults[f.name])
        elif f.default is not dataclasses.MISSING:
            default = pydantic.Field(default=f.default)
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            default = pydantic.Field(default_factory=f.default_factory)  # type: ignore[misc]
        else:
            default = ...
        definitions[f.name] = (tp, default)
    definitions.update(fields or {})
    model_name = name or f"{cls.__name__}Settings"
    branch_label(model_name)
    allowed = sorted(definitions)

    def refuse_unknown_keys(values: Any) -> Any:
        if isinstance(values, dict):
            unknown = sorted(set(values) - set(allowed))
            if unknown:
                from pydantic_core import PydanticCustomError

                raise PydanticCustomError("unknown_setting", "unknown setting(s) {keys}; allowed: {allowed}",
                                          {"keys": unknown, "allowed": allowed})
        return values

    def run_check(model: Any) -> Any:
        if check is not None:
            check(model.model_dump(exclude_unset=True))
        return model

    validators = {"refuse_unknown_keys": pydantic.model_validator(mode="before")(refuse_unknown_keys),
                  "run_check": pydantic.model_validator(mode="after")(run_check)}
    model = pydantic.create_model(model_name, __base__=settings_base(), __validators__=validators,
                                  __doc__=f"Settings of {cls.__module__}.{cls.__qualname__} (keys: {allowed}).",
                                  **definitions)
    model.__dataclass__ = cls
    return model


_BASE = None


def settings_base() -> type:
    """The base of every generated schema model: unknown keys forbidden, and the dict the user gave kept, so the
    components get exactly those values (``given``)."""
    global _BASE
    if _BASE is None:
        pydantic = _pydantic()

        class SettingsModel(pydantic.BaseModel, Settings):
            model_config = pydantic.ConfigDict(extra="forbid")
            _given: dict | None = pydantic.PrivateAttr(default=None)

            @pydantic.model_validator(mode="wrap")
            @classmethod
            def _keep_given(cls, values: Any, handler: Any) -> Any:
                model = handler(values)
                if isinstance(values, dict) and model._given is None:
                    model._given = _plain_copy(values)
                return model

            def given(self) -> dict:
                """The settings as the user gave them (a copy), for the component that parses them."""
                if self._given is not None:
                    return _plain_copy(self._given)
                return self.model_dump(exclude_unset=True)

        _BASE = SettingsModel
    return _BASE


def _plain_copy(value: Any) -> Any:
    import copy

    return copy.deepcopy(value)


def located(tp: Any, where: str) -> Any:
    """``tp`` as a parameter type checked at ``where`` (e.g. ``steps.pretrain.parameters.training``): a refused
    value raises :class:`ConfigError` naming ``where`` plus the path inside the value."""
    from typing import Annotated

    from pydantic import WrapValidator

    return Annotated[tp, WrapValidator(_Locate(where))]


class _Locate:
    def __init__(self, where: str):
        self.where = where

    def __call__(self, value: Any, handler: Any) -> Any:
        pydantic = _pydantic()
        try:
            return handler(value)
        except pydantic.ValidationError as e:
            raise ConfigError([_describe(self.where, err) for err in e.errors()]) from None

    def __repr__(self) -> str:
        return f"located at {self.where}"


def _describe(where: str, err: dict) -> tuple[str, str]:
    loc = [str(p) for p in err.get("loc", ()) if str(p) not in _BRANCH_LABELS]
    ctx = err.get("ctx") or {}
    kind = str(err.get("type"))
    if kind == "unknown_setting":
        keys = ctx.get("keys", [])
        if len(keys) == 1:
            loc.append(str(keys[0]))
            return ".".join([where, *loc]), f"unknown setting; allowed: {ctx.get('allowed')}"
        return ".".join([where, *loc]), f"unknown settings {keys}; allowed: {ctx.get('allowed')}"
    message = err.get("msg", "invalid")
    if kind.startswith("unknown_"):  # a discriminated union's unknown tag: "unknown_name" -> the key "name"
        given = err.get("input")
        if not isinstance(given, dict):
            return ".".join([where, *loc]), f"expected a mapping of settings (got {given!r})"
        key = kind[len("unknown_"):]
        return ".".join([where, *loc, key]), f"{message} (got {given.get(key)!r})"
    if kind == "value_error" and message.startswith("Value error, "):
        message = message[len("Value error, "):]
    elif kind == "missing":
        message = "required setting missing"
    else:
        message = f"{message} (got {err.get('input')!r})"
    return ".".join([where, *loc]), message


_ADAPTERS: dict[Any, Any] = {}


def settings_dict(value: Any, tp: Any) -> Any:
    """What a step hands its component: ``None`` as is, a schema model as the dict the user gave, a dict (a step
    function called directly, ``step.entrypoint(...)``) checked against ``tp`` (a :func:`located` type) first."""
    if value is None:
        return None
    if isinstance(value, Settings):
        return value.given()  # type: ignore[attr-defined]
    if tp not in _ADAPTERS:
        _ADAPTERS[tp] = _pydantic().TypeAdapter(tp)
    checked = _ADAPTERS[tp].validate_python(value)
    return checked.given() if isinstance(checked, Settings) else checked
