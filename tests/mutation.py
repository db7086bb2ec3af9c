"""Structural mutation of parsed documents (JSON payloads, YAML files) for the mutation tests."""

from __future__ import annotations

import random
from collections.abc import Iterator, Mapping, Sequence
from typing import Any


def mutate(rng: random.Random, doc: Any, edges: Sequence[Any], keys: Sequence[str]) -> Any:
    """A copy of `doc` with one change somewhere inside: a field dropped, added (a name of
    `keys`) or swapped for one of `edges`, a list item dropped, inserted or the list grown."""
    r = rng.random()
    if isinstance(doc, dict) and doc:
        doc = dict(doc)
        k = rng.choice(list(doc))
        if r < 0.15:
            del doc[k]
        elif r < 0.25:
            doc[rng.choice(keys)] = rng.choice(edges)
        elif r < 0.6:
            doc[k] = rng.choice(edges)
        else:
            doc[k] = mutate(rng, doc[k], edges, keys)
        return doc
    if isinstance(doc, list) and doc:
        doc = list(doc)
        i = rng.randrange(len(doc))
        if r < 0.15:
            del doc[i]
        elif r < 0.3:
            doc.insert(i, rng.choice(edges))
        elif r < 0.4:
            doc = doc * rng.randint(2, 20)
        else:
            doc[i] = mutate(rng, doc[i], edges, keys)
        return doc
    return rng.choice(edges)


def mutated_files(rng: random.Random, docs: Mapping[str, Any], edges: Sequence[Any], keys: Sequence[str],
                  n: int) -> Iterator[tuple[int, str, Any]]:
    """`n` times: (i, name, a copy of one of `docs` with one to three changes)."""
    for i in range(n):
        name = rng.choice(sorted(docs))
        doc = docs[name]
        for _ in range(rng.randint(1, 3)):
            doc = mutate(rng, doc, edges, keys)
        yield i, name, doc
