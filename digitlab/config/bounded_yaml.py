"""Bounds on the YAML of configs and command-line values, checked before jsonargparse loads it.

YAML aliases (``*name``) repeat an anchored part (``&name``) without copying it, so a few hundred bytes of
nested aliases (a "billion laughs") stand for billions of values, which jsonargparse would expand in memory
and quote in its error message. Aliases are allowed (a config may reuse a part, and PyYAML writes
shared parts of a saved config as aliases), but not a document that expands beyond `MAX_VALUES` values,
refers to itself, or nests deeper than `MAX_DEPTH`. Counting works on the composed node graph, where an
alias is the anchored node itself: it costs one visit per distinct node, whatever the expansion.
"""

from __future__ import annotations

import yaml

MAX_VALUES = 10_000  # a full `digitlab fit --print_config` holds about 220 (keys, values, lists and mappings)
MAX_DEPTH = 100  # a config nests about 6 deep (trainer.callbacks[0].init_args.monitor)


TOO_MANY = (f"expands to more than {MAX_VALUES:,} values once its YAML aliases (*name) are expanded, where a "
            "digitlab config holds a few hundred. Write the values out rather than nesting anchors (&name) in each "
            "other")
ENDLESS = "repeats itself endlessly: an alias (*name) lies inside its own anchor (&name). Remove that alias"
TOO_DEEP = (f"nests more than {MAX_DEPTH} levels deep, where a digitlab config nests about 6. Check its brackets "
            "and indentation")


class ConfigTooLarge(yaml.YAMLError):
    """A YAML document beyond the bounds; its message completes a sentence such as "The config file X ..."."""


def check_size(text: str) -> None:
    """Raise `ConfigTooLarge` if `text`, a YAML document, expands beyond the bounds once aliases are expanded."""
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
