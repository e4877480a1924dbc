"""Class lists for open-vocabulary models (``--classes FILE``), torch-free.

The format, one entry per line (UTF-8)::

    # a comment; blank lines are ignored
    template: a video of a person {}.
    template: someone {} during an interview.
    touching jaw
    yawning

Every other line is one class name, in the order the model's scores follow.
``template:`` lines (also ``templates:``; anywhere in the file) give prompt
templates, each with exactly one ``{}`` where the class name goes; without
any, the model keeps its own templates. Names must be unique.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from microgesture.core.errors import MicrogestureError

_TEMPLATE_KEYS = ("template:", "templates:")


@dataclass(frozen=True)
class ClassList:
    labels: tuple[str, ...]
    templates: tuple[str, ...] | None
    """None: the model's own templates."""
    source: str = ""


def parse_classes(text: str, source: str = "the class list") -> ClassList:
    """Parse the module's format; a clear one-line error names the line and the fix."""
    labels: list[str] = []
    templates: list[str] = []
    seen: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key = next((k for k in _TEMPLATE_KEYS if line.lower().startswith(k)), None)
        if key is not None:
            template = line[len(key):].strip()
            if template.count("{}") != 1:
                raise MicrogestureError(f"{source}, line {number}: a template needs exactly one '{{}}' where the "
                                        f"class name goes, got {template!r}")
            templates.append(template)
            continue
        if "{" in line or "}" in line:
            raise MicrogestureError(f"{source}, line {number}: {line!r} has braces but is a class name; start a "
                                    "prompt template's line with 'template:'")
        folded = class_key(line)
        if folded in seen:
            raise MicrogestureError(f"{source}, line {number}: class {line!r} is already on line {seen[folded]}; "
                                    "list each class once")
        seen[folded] = number
        labels.append(" ".join(line.split()))
    if not labels:
        raise MicrogestureError(f"{source} names no class: write one class name per line")
    return ClassList(tuple(labels), tuple(templates) or None, source)


def read_classes(path: str | Path) -> ClassList:
    """Read and parse a class-list file."""
    path = Path(path)
    if not path.is_file():
        raise MicrogestureError(f"--classes {path}: no such file (one class name per line)")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise MicrogestureError(f"--classes {path} is not UTF-8 text: save it as UTF-8") from None
    return parse_classes(text, str(path))


def class_key(name: str) -> str:
    """How class names are compared: ignoring case and repeated spaces."""
    return " ".join(name.split()).casefold()


def label_map(dataset_classes, labels) -> list[int]:
    """For each of a dataset's classes, its position in ``labels`` (names compared with
    :func:`class_key`); a clear error names the first dataset class the list lacks."""
    position = {class_key(n): i for i, n in enumerate(labels)}
    out = []
    for name in dataset_classes:
        key = class_key(name)
        if key not in position:
            raise MicrogestureError(f"the dataset's class {name!r} is not in the class list: add it (the model "
                                    "can only answer with the listed classes)")
        out.append(position[key])
    return out
