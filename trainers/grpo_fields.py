"""The fields of the installed TRL's ``GRPOConfig``, read from TRL's and transformers' source files
without importing them (``from trl import GRPOConfig`` takes 6-10 s: it imports torch and
transformers). Used to check ``trainer.*`` options before anything heavy is imported.

The class is followed from ``trl/trainer/grpo_config.py`` through its bases (TRL's own modules)
down to transformers' ``TrainingArguments``; as in a dataclass, a subclass's annotation of a field
wins. Each field keeps its annotation as written (``int | None``) and, where the source names them,
the strings it allows: the members of an enum in the annotation (``SchedulerType | str``: the
scheduler names), TRL's loss names for ``loss_type`` (those ``GRPOTrainer`` compares it with) and
transformers' reporting integrations for ``report_to`` (with ``all`` and ``none``).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

#: Where the chain of bases ends: transformers' training arguments (imported by TRL from the
#: package's top level, which re-exports it lazily).
ROOT_CLASS = ("transformers", "training_args.py", "TrainingArguments")
#: How a plain type of an annotation is described in an error message.
KIND_WORDS = {"bool": "true or false", "int": "an integer", "float": "a number",
              "str": "a string", "dict": "a mapping", "list": "a list", "None": "null"}


@dataclass(frozen=True)
class GRPOField:
    """One field: its annotation as written, the plain types it allows (empty: a type this module
    cannot check, e.g. a class), and the strings it allows when the source names them."""

    name: str
    annotation: str
    kinds: frozenset[str]
    choices: tuple[str, ...] = ()
    constants: tuple[Any, ...] = ()  # values of a ``Literal[...]`` in the annotation

    def accepts(self, value: Any) -> bool:
        """Whether ``value`` (from a YAML config) has one of the field's types and values."""
        if not self.kinds or any(value is constant for constant in self.constants):
            return True
        if value is None or isinstance(value, bool):
            return ("None" if value is None else "bool") in self.kinds
        if isinstance(value, int | float):
            return "float" in self.kinds or ("int" in self.kinds and isinstance(value, int))
        if isinstance(value, str):
            return "str" in self.kinds and (not self.choices or value in self.choices)
        if isinstance(value, Mapping):
            return "dict" in self.kinds
        if isinstance(value, list | tuple):
            return "list" in self.kinds and (not self.choices
                                             or all(item in self.choices for item in value))
        return False

    def describe(self) -> str:
        """What the field allows, in words: ``an integer or null``, ``one of [...]``."""
        words = []
        for kind, word in KIND_WORDS.items():
            if kind in self.kinds:
                if self.choices and kind in ("str", "list"):
                    word = f"one of {list(self.choices)}" if kind == "str" else "a list of those"
                words.append(word)
        return " or ".join(words + [repr(constant) for constant in self.constants])


@functools.cache
def grpo_config_fields() -> dict[str, GRPOField]:
    """Every field of the installed ``trl.GRPOConfig``, by name."""
    trl_folder = _package_folder("trl")
    module, name = trl_folder / "trainer" / "grpo_config.py", "GRPOConfig"
    fields: dict[str, GRPOField] = {}
    while True:
        class_node = _classes(module).get(name)
        if class_node is None:
            raise RuntimeError(f"cannot read GRPOConfig's fields: no class {name} in {module}")
        for statement in class_node.body:
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name):
                field_name = statement.target.id
                if field_name not in fields:  # a subclass's annotation wins
                    fields[field_name] = _field(field_name, statement.annotation, module)
        if (module.name, name) == ROOT_CLASS[1:]:
            break
        module, name = _base_class(class_node, module)
    _add_choices(fields, "loss_type", _loss_types(trl_folder / "trainer" / "grpo_trainer.py"))
    _add_choices(fields, "report_to", _integrations(_package_folder("transformers")))
    return fields


def _package_folder(package: str) -> Path:
    """The folder of an installed package, found without importing it."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(f"cannot read GRPOConfig's fields: {package} is not installed")
    return Path(next(iter(spec.submodule_search_locations)))


@functools.cache
def _tree(module: Path) -> ast.Module:
    return ast.parse(module.read_text(encoding="utf-8"), filename=str(module))


def _classes(module: Path) -> dict[str, ast.ClassDef]:
    return {node.name: node for node in _tree(module).body if isinstance(node, ast.ClassDef)}


def _imported_module(name: str, module: Path) -> Path | None:
    """The file that a ``from .x import name`` of ``module`` reads ``name`` from (relative imports
    only: those stay inside the package), or None."""
    for node in _tree(module).body:
        if (isinstance(node, ast.ImportFrom) and node.level
                and any(alias.name == name for alias in node.names)):
            folder = module.parent
            for _ in range(node.level - 1):
                folder = folder.parent
            target = folder.joinpath(*(node.module or "").split("."))
            return target / "__init__.py" if target.is_dir() else target.with_suffix(".py")
    return None


def _base_class(class_node: ast.ClassDef, module: Path) -> tuple[Path, str]:
    """Where the first base of a class is defined: the same module, a relative import, or the
    chain's root (transformers' ``TrainingArguments``)."""
    if not class_node.bases or not isinstance(class_node.bases[0], ast.Name):
        raise RuntimeError(f"cannot read GRPOConfig's fields: {class_node.name} in {module} has "
                           f"no base class named like {ROOT_CLASS[2]}")
    base = class_node.bases[0].id
    if base in _classes(module):
        return module, base
    if base == ROOT_CLASS[2]:
        return _package_folder(ROOT_CLASS[0]) / ROOT_CLASS[1], base
    imported = _imported_module(base, module)
    if imported is None:
        raise RuntimeError(f"cannot read GRPOConfig's fields: where {base} (base of "
                           f"{class_node.name} in {module}) comes from")
    return imported, base


def _members(annotation: ast.expr) -> list[ast.expr]:
    """The members of a union annotation: ``A | B``, ``Optional[A]``, ``Union[A, B]``."""
    if isinstance(annotation, ast.BinOp) and isinstance(annotation.op, ast.BitOr):
        return _members(annotation.left) + _members(annotation.right)
    if isinstance(annotation, ast.Subscript) and isinstance(annotation.value, ast.Name):
        elements = (annotation.slice.elts if isinstance(annotation.slice, ast.Tuple)
                    else [annotation.slice])
        if annotation.value.id == "Optional":
            return [*elements, ast.Constant(None)]
        if annotation.value.id == "Union":
            return [member for element in elements for member in _members(element)]
    return [annotation]


def _field(name: str, annotation: ast.expr, module: Path) -> GRPOField:
    kinds, choices, constants = set(), [], []
    for member in _members(annotation):
        if isinstance(member, ast.Constant) and member.value is None:
            kinds.add("None")
        elif isinstance(member, ast.Name) and member.id in KIND_WORDS:
            kinds.add(member.id)
        elif isinstance(member, ast.Subscript) and isinstance(member.value, ast.Name):
            if member.value.id == "Literal":
                elements = (member.slice.elts if isinstance(member.slice, ast.Tuple)
                            else [member.slice])
                constants += [ast.literal_eval(element) for element in elements]
            elif member.value.id in ("dict", "list"):
                kinds.add(member.value.id)
            else:
                return GRPOField(name, ast.unparse(annotation), frozenset())
        elif isinstance(member, ast.Name) and (values := _enum_values(member.id, module)):
            kinds.add("str")
            choices += values
        else:  # a type this module cannot check
            return GRPOField(name, ast.unparse(annotation), frozenset())
    return GRPOField(name, ast.unparse(annotation), frozenset(kinds), tuple(choices),
                     tuple(constants))


def _enum_values(name: str, module: Path) -> list[str]:
    """The string values of the enum class ``name`` as seen from ``module`` (empty if it is not
    an enum of strings defined there or imported relatively)."""
    where = module if name in _classes(module) else _imported_module(name, module)
    class_node = _classes(where).get(name) if where is not None and where.is_file() else None
    if class_node is None or not any(ast.unparse(base).endswith("Enum")
                                     for base in class_node.bases):
        return []
    return [statement.value.value for statement in class_node.body
            if isinstance(statement, ast.Assign) and isinstance(statement.value, ast.Constant)
            and isinstance(statement.value.value, str)]


def _loss_types(trainer_module: Path) -> list[str]:
    """The names ``GRPOTrainer`` compares ``loss_type`` with: the losses it implements."""
    names: list[str] = []
    for node in ast.walk(_tree(trainer_module)):
        if (isinstance(node, ast.Compare) and isinstance(node.left, ast.Attribute)
                and node.left.attr == "loss_type"):
            for compared in node.comparators:
                elements = (compared.elts if isinstance(compared, ast.List | ast.Tuple | ast.Set)
                            else [compared])
                names += [element.value for element in elements
                          if isinstance(element, ast.Constant) and isinstance(element.value, str)]
    return list(dict.fromkeys(names))


def _integrations(transformers_folder: Path) -> list[str]:
    """``report_to``'s values: transformers' reporting integrations, ``all`` and ``none``."""
    module = transformers_folder / "integrations" / "integration_utils.py"
    for node in _tree(module).body:
        if (isinstance(node, ast.Assign) and isinstance(node.value, ast.Dict)
                and any(isinstance(target, ast.Name) and target.id == "INTEGRATION_TO_CALLBACK"
                        for target in node.targets)):
            return ["all", "none", *(key.value for key in node.value.keys
                                     if isinstance(key, ast.Constant))]
    return []


def _add_choices(fields: dict[str, GRPOField], name: str, choices: list[str]) -> None:
    """Restrict a string field to ``choices``, read from where the libraries use it."""
    if not choices:
        raise RuntimeError(f"cannot read the allowed values of GRPOConfig.{name} from the "
                           f"installed TRL and transformers source")
    field = fields[name]
    fields[name] = GRPOField(name, field.annotation, field.kinds, tuple(choices), field.constants)
