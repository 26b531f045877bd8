"""Provides fingerprints: what decides whether a stored result may be reused.

A step's fingerprint hashes, separately so that `flow show` can say *why* a step ran:

- `code`: its normalised source (parsed and unparsed: comments, formatting and docstrings do not count;
  decorators do not either, their result-changing options are hashed under `options`);
- `helpers`: everything of the user's it can reach, transitively, by qualified name: functions, classes,
  modules and constants it reads as globals (attribute names do not count: `text.split` does not make a
  step named `split` a helper), and the code hidden in values (`Hasher.digest`: wrapped functions,
  partials, bound methods, functions in containers, closures by what they captured, dicts in order),
  and `import X` for each module imported in a function body
  (its whole import closure, `runner.fingerprint.imports`).
  "The user's" is decided by `dsl.locality` (not installed, not the standard library); installed code
  counts by its distribution's version;
- `options`: `foreach`, `version` and the `when=` predicate;
- `command`: for an external step (`dsl.external`), its `Step.spec`: argv and env templates, image and
  digest, declared outputs, connection variables (a secret's value is never part of it);
- `params`: the values of the flow parameters it reads;
- `inputs`: the content hash of each upstream output (early cut-off: an upstream that re-runs and
  returns the same bytes does not invalidate its descendants);
- `declared`: its declared input files and environment variables (`runner.fingerprint.declared`).

Source comes from the text the loader read and compiled, never from `linecache` or `inspect`, which can
be stale right after an edit. When something cannot be hashed with confidence (a module imported by a
computed name, a compiled extension of the user's, an unpicklable global) the step is marked untrusted
and always runs: never a stale result.

The package, by part: `source` (the source index and normalisation), `values` (value hashing),
`bytecode` (the globals a code object reads), `hasher` (the reference closure), `imports` (the import
closure of a module imported in a function body), `declared` (declared input files and environment
variables), `prints` (what is known at load: `static_prints`), `combine` (the fingerprint and `explain`).
"""

from __future__ import annotations

from runner.fingerprint.combine import combine, explain
from runner.fingerprint.prints import StaticPrint, static_prints
from runner.fingerprint.values import Untrusted, value_hash

__all__ = ["StaticPrint", "Untrusted", "combine", "explain", "static_prints", "value_hash"]
