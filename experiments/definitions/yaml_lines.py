"""Safe-load YAML remembering where each key sits, so a bad value can be named by file and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml


class LinedDict(dict):
    """A YAML mapping that knows the line (1-based) of each of its keys."""

    lines: dict[Any, int]


class DuplicateKeyError(ValueError):
    pass


MERGE = "tag:yaml.org,2002:merge"


class _LineLoader(yaml.SafeLoader):
    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Merge keys by the YAML merge spec: in `<<: [*a, *b]` the earlier mapping wins, the
        mapping's own keys win over all. (PyYAML 6.0.4 tells merged keys apart by the id of their
        text, so a key longer than one character from the later mapping wins.) Merged pairs come
        first, each key once."""
        merged: list[tuple[yaml.Node, yaml.Node]] = []
        own: list[tuple[yaml.Node, yaml.Node]] = []
        seen: set[Any] = set()
        for key_node, value_node in node.value:
            if key_node.tag != MERGE:
                own.append((key_node, value_node))
                continue
            sources = (value_node.value if isinstance(value_node, yaml.SequenceNode)
                       else [value_node])
            for source in sources:
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"expected a mapping or a list of mappings to merge, but found {source.id}",
                        source.start_mark)
                self.flatten_mapping(source)
                for pair in source.value:
                    key = ((pair[0].tag, pair[0].value) if isinstance(pair[0], yaml.ScalarNode)
                           else id(pair[0]))
                    if key not in seen:
                        seen.add(key)
                        merged.append(pair)
        node.value = merged + own

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> LinedDict:
        explicit = sum(key.tag != MERGE for key, _ in node.value)
        self.flatten_mapping(node)  # merge keys (`<<: *base`) become ordinary pairs, placed first
        merged = len(node.value) - explicit
        mapping = LinedDict()
        mapping.lines = {}
        inherited: set[Any] = set()  # keys a merge gave, which the mapping's own keys may override
        for i, (key_node, value_node) in enumerate(node.value):
            key = self.construct_object(key_node, deep=deep)
            if key in mapping and key not in inherited:  # PyYAML would keep the last one silently
                raise DuplicateKeyError(f"line {key_node.start_mark.line + 1}: key '{key}' given "
                                        "twice")
            (inherited.add if i < merged else inherited.discard)(key)
            mapping[key] = self.construct_object(value_node, deep=deep)
            mapping.lines[key] = key_node.start_mark.line + 1
        return mapping


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG,
                            _LineLoader.construct_mapping)


def load(path: Path) -> Any:
    """The file's data; mappings are `LinedDict`s. Raises yaml.YAMLError, DuplicateKeyError,
    OSError."""
    return yaml.load(path.read_text(encoding="utf-8"), Loader=_LineLoader)  # noqa: S506 - a SafeLoader


def line_of(mapping: Any, key: Any) -> str:
    """' line N' where the YAML gave it, else ''."""
    line = getattr(mapping, "lines", {}).get(key)
    return f" line {line}" if line else ""


def one_line(e: Exception) -> str:
    """A YAML error as one line: where it is and what is wrong."""
    mark, problem = getattr(e, "problem_mark", None), getattr(e, "problem", None)
    if mark is None or problem is None:
        return " ".join(str(e).split())
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
