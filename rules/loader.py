"""Loading rule files: one file, a folder of *.yaml files, or the packaged defaults.

Every file is checked (also the files of profiles not chosen), and all problems are reported
together with file, line and reason; a set with any problem is rejected as a whole so the
caller keeps the previous rules in force.

Profiles: a file may declare ``profile: NAME``. Files without a profile always apply; the
files of the chosen profiles apply on top, in the order the profiles are given (a regional
variant, then the season, then a special event chosen by hand), and their rules replace
earlier rules with the same id (the packaged ``guangdong`` profile replaces the national
rainstorm rule by one without blue); a replacing rule with ``enabled: false`` switches the
earlier rule off. Hazard rules (``rules:``) and device-fault rules (``faults:``) share one id
space, since a warning is identified by (rule id, subject).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from ews.yamlfile import ConfigError, LoadedYaml, Problem, parse_yaml, validate_doc
from rules.compile import compile_fault, compile_rule
from rules.model import FaultSpec, RuleSet, RulesFileIn, RuleSpec

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"


@dataclass
class RuleFile:
    file: str
    version: str
    profile: str | None
    rules: list[RuleSpec] = field(default_factory=list)
    doc: LoadedYaml | None = None
    faults: list[FaultSpec] = field(default_factory=list)
    digest: str = ""  # sha256 of the file's bytes: what changed, whatever `version` says

    def specs(self) -> list[RuleSpec | FaultSpec]:
        return [*self.rules, *self.faults]


def rule_files(path: Path | None) -> list[Path]:
    root = DEFAULTS_DIR if path is None else Path(path)
    if root.is_dir():
        files = sorted([*root.glob("*.yaml"), *root.glob("*.yml")])
        if not files:
            raise ConfigError([Problem(str(root), None, "", "no *.yaml rule files in this folder")])
        return files
    if not root.exists():
        raise ConfigError([Problem(str(root), None, "", "no such file or folder")])
    return [root]


def read_rule_file(path: Path) -> tuple[RuleFile | None, list[Problem]]:
    try:
        raw = path.read_bytes()
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(str(path), None, "", f"cannot read file: {exc}")]
    try:
        doc = parse_yaml(text, str(path))
        if doc.data is None:
            return None, [Problem(str(path), None, "", "file is empty")]
        model = validate_doc(RulesFileIn, doc)
    except ConfigError as exc:
        return None, exc.problems
    version = model.version or hashlib.sha256(raw).hexdigest()[:12]
    out = RuleFile(str(path), version, model.profile, doc=doc, digest=hashlib.sha256(raw).hexdigest())
    problems: list[Problem] = []
    for i, rule in enumerate(model.rules):
        spec, found = compile_rule(rule, doc, ("rules", i), version, model.profile)
        problems += found
        if spec is not None:
            out.rules.append(spec)
    for i, fault in enumerate(model.faults):
        fspec, found = compile_fault(fault, doc, ("faults", i), version, model.profile)
        problems += found
        if fspec is not None:
            out.faults.append(fspec)
    return out, problems


def _duplicates(files: list[RuleFile]) -> list[Problem]:
    """A rule id may appear once among the base files and once per profile."""
    problems = []
    seen: dict[tuple[str | None, str], str] = {}
    for f in files:
        for spec in f.specs():
            key = (f.profile, spec.id)
            if key in seen:
                layer = f"profile {f.profile}" if f.profile else "the base rules"
                problems.append(Problem(f.file, spec.line, "id",
                                        f"rule id {spec.id!r} already defined in {layer} "
                                        f"({seen[key]})"))
            else:
                seen[key] = f"{spec.file}:{spec.line}"
    return problems


def collect(path: Path | None) -> tuple[list[RuleFile], list[Problem]]:
    """Read and check every rule file under `path`; never raises for bad content."""
    try:
        paths = rule_files(path)
    except ConfigError as exc:
        return [], exc.problems
    files: list[RuleFile] = []
    problems: list[Problem] = []
    for p in paths:
        f, found = read_rule_file(p)
        problems += found
        if f is not None:
            files.append(f)
    return files, problems + _duplicates(files)


def combined_version(files: list[RuleFile]) -> str:
    if len(files) == 1:
        return files[0].version
    h = hashlib.sha256()
    for f in files:
        h.update(f"{Path(f.file).name}={f.version}\n".encode())
    return h.hexdigest()[:12]


def profile_list(profile: str | Sequence[str] | None) -> list[str]:
    if profile is None:
        return []
    return [profile] if isinstance(profile, str) else list(dict.fromkeys(profile))


def load_rules(path: Path | None = None, profile: str | Sequence[str] | None = None) -> RuleSet:
    """The rules under `path` (None: the packaged defaults) for the given profile(s)."""
    files, problems = collect(path)
    if problems:
        raise ConfigError(problems)
    return assemble(files, profile_list(profile), str(DEFAULTS_DIR if path is None else path))


def assemble(files: list[RuleFile], profiles: list[str], where: str) -> RuleSet:
    known = {f.profile for f in files if f.profile}
    unknown = [p for p in profiles if p not in known]
    if unknown:
        names = ", ".join(sorted(known)) or "none"
        raise ConfigError([Problem(where, None, "profile",
                                   f"unknown profile {unknown[0]!r}; profiles here: {names}")])
    layer: dict[str | None, int] = {None: 0, **{p: i + 1 for i, p in enumerate(profiles)}}
    used = sorted((f for f in files if f.profile in layer), key=lambda f: layer[f.profile])
    by_id: dict[str, RuleSpec | FaultSpec] = {}
    for f in used:
        for spec in f.specs():
            by_id[spec.id] = spec  # later layers replace earlier rules, in their place
    return RuleSet(
        version=combined_version(used),
        rules=[r for r in by_id.values() if isinstance(r, RuleSpec) and r.enabled],
        files=[f.file for f in used],
        faults=[r for r in by_id.values() if isinstance(r, FaultSpec) and r.enabled],
        profiles=tuple(profiles),
        digest=hashlib.sha256("".join(f"{f.file}={f.digest}\n" for f in used).encode()).hexdigest(),
    )
