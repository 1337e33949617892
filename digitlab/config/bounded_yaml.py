"""Bounds on the YAML of configs and command-line values, checked before jsonargparse loads it.

YAML aliases (``*name``) repeat an anchored part (``&name``) without copying it, so a few hundred bytes of
nested aliases (a "billion laughs") stand for billions of values, which jsonargparse would expand in memory
and quote in its error message. Aliases are allowed (a config may reuse a part, and PyYAML writes
shared parts of a saved config as aliases), but not a document that expands beyond `MAX_VALUES` values,
refers to itself, or nests deeper than `MAX_DEPTH`. Counting works on the composed node graph, where an
alias is the anchored node itself: it costs one visit per distinct node, whatever the expansion.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Optional

import yaml

from digitlab.errors import UserError

MAX_VALUES = 10_000  # a full `digitlab fit --print_config` holds about 220 (keys, values, lists and mappings)
MAX_DEPTH = 100  # a config nests about 6 deep (trainer.callbacks[0].init_args.monitor)
MAX_BYTES = 1 << 20  # a digitlab config, run config or sweep file is a few kilobytes
MAX_EVENTS = 4 * MAX_VALUES  # parser events of a document: about two per value, before aliases are expanded
MAX_QUOTED = 300  # characters of a file's text or of PyYAML's message quoted in an error


TOO_MANY = (f"expands to more than {MAX_VALUES:,} values once its YAML aliases (*name) are expanded, where a "
            "digitlab config holds a few hundred. Write the values out rather than nesting anchors (&name) in each "
            "other")
ENDLESS = "repeats itself endlessly: an alias (*name) lies inside its own anchor (&name). Remove that alias"
TOO_DEEP = (f"nests more than {MAX_DEPTH} levels deep, where a digitlab config nests about 6. Check its brackets "
            "and indentation")
TOO_BIG = (f"is larger than {MAX_BYTES:,} bytes, where a digitlab config or sweep file is a few kilobytes. Is it the "
           "right file?")


class ConfigTooLarge(yaml.YAMLError):
    """A YAML document beyond the bounds; its message completes a sentence such as "The config file X ..."."""


class UnreadableYaml(UserError):
    """A YAML file or text that cannot be used: missing, too large, not text, not YAML, or beyond the bounds.
    Its message is one paragraph; `reason` is the part after the file's name."""

    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where} {reason}.")
        self.reason = reason


def load_yaml_file(path: Path, what: str, load: Optional[Callable[[str], Any]] = None) -> Any:
    """The YAML document in the file `path`, a `what` ("sweep file"), read only after its size is checked.

    `load` turns the bounded text into values (PyYAML's safe loader unless given: jsonargparse's reads
    ``1e-4`` as a number). Raises `UnreadableYaml`."""
    where = f"The {what} {path}"
    try:
        with open(path, "rb") as stream:
            data = stream.read(MAX_BYTES + 1)  # never the whole of a huge file
    except OSError as error:
        raise UnreadableYaml(where, f"cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_BYTES:
        raise UnreadableYaml(where, TOO_BIG)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UnreadableYaml(where, f"is not UTF-8 text (byte 0x{data[error.start]:02x} at offset {error.start}): is "
                                    "it the right file? YAML is saved as plain UTF-8 text") from None
    return load_yaml_text(text, where, load)


def load_yaml_text(text: str, where: str, load: Optional[Callable[[str], Any]] = None) -> Any:
    """The YAML document `text`, refused (`UnreadableYaml`, its message starting with `where`) beyond the
    bounds before any value is built."""
    try:
        check_size(text)
        check_unique_keys(text)
        return (load or _safe_load)(text)
    except (ConfigTooLarge, DuplicateKey) as error:
        raise UnreadableYaml(where, str(error)) from None
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        problem = getattr(error, "problem", None) or " ".join(str(error).split())
        if getattr(error, "context", None):
            problem = f"{error.context}, {problem}"
        raise UnreadableYaml(where, f"is not valid YAML{line}: {quoted(problem)}") from None


def quoted(text: str) -> str:
    """`text`, cut to `MAX_QUOTED` characters: an error message may hold a whole value of a file."""
    return text if len(text) <= MAX_QUOTED else f"{text[:MAX_QUOTED]}… ({len(text) - MAX_QUOTED:,} more characters)"


def _safe_load(text: str) -> Any:
    return yaml.load(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))


def check_size(text: str) -> None:
    """Raise `ConfigTooLarge` if `text`, a YAML document, expands beyond the bounds once aliases are expanded."""
    if len(text) > MAX_BYTES:
        raise ConfigTooLarge(TOO_BIG)
    _count_events(text)  # composing builds a node per value: refuse a long or deep document before that
    try:
        root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except RecursionError:
        raise ConfigTooLarge(TOO_DEEP) from None
    if root is not None:
        _count_values(root)


def _count_values(root: yaml.Node) -> int:
    """Values (scalars, lists, mappings) in the document once its aliases are expanded, depth first, without
    expanding them: each distinct node is visited once and its expanded size remembered."""
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()  # the ancestors of the node being visited: an alias to one is a cycle
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        if children_done:
            open_nodes.discard(id(node))
            sizes[id(node)] = 1 + sum(sizes[id(child)] for child in _children(node))
            if sizes[id(node)] > MAX_VALUES:
                raise ConfigTooLarge(TOO_MANY)
        elif id(node) not in sizes:
            if id(node) in open_nodes:
                raise ConfigTooLarge(ENDLESS)
            if len(open_nodes) >= MAX_DEPTH:
                raise ConfigTooLarge(TOO_DEEP)
            open_nodes.add(id(node))
            stack.append((node, True))
            stack.extend((child, False) for child in _children(node))
    return sizes[id(root)]


def _count_events(text: str) -> None:
    """Stream the parser's events, holding none: too many values or too deep a nesting is refused as it is met."""
    depth = 0
    for count, event in enumerate(yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))):
        if count > MAX_EVENTS:
            raise ConfigTooLarge(TOO_MANY)
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                raise ConfigTooLarge(TOO_DEEP)
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return node.value if isinstance(node, yaml.SequenceNode) else []


class DuplicateKey(yaml.YAMLError):
    """A mapping that sets one key twice; its message completes a sentence such as "The config file X ..."."""


def check_unique_keys(text: str) -> None:
    """Raise `DuplicateKey` if a mapping of `text`, a YAML document within the bounds of `check_size`, sets a
    key twice: YAML loaders keep the last value silently, so a typo'd copy would win unseen."""
    root = yaml.compose(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    seen: set[int] = set()
    stack = [root] if root is not None else []
    while stack:
        node = stack.pop()
        if id(node) in seen:  # an alias: the anchored node, already checked
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            lines: dict[str, int] = {}
            for key, _ in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value != "<<":
                    if key.value in lines:
                        raise DuplicateKey(f"sets the key '{key.value}' twice (lines {lines[key.value]} and "
                                           f"{key.start_mark.line + 1}), and YAML would keep only the last. Remove one")
                    lines[key.value] = key.start_mark.line + 1
        stack.extend(_children(node))
