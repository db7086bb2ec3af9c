"""Loading rule files: one file, a folder of *.yaml files, or the packaged defaults.

Every file is checked (also the files of profiles not chosen), and all problems are reported
together with file, line and reason; a set with any problem is rejected as a whole so the
caller keeps the previous rules in force.

Profiles: a file may declare ``profile: NAME``. Files without a profile always apply; the
files of the chosen profile apply on top, and their rules replace base rules with the same id
(the packaged ``guangdong`` profile replaces the national rainstorm rule by one without blue);
a replacing rule with ``enabled: false`` switches the base rule off for that profile.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

from ews.yamlfile import ConfigError, LoadedYaml, Problem, parse_yaml, validate_doc
from rules.compile import compile_rule
from rules.model import RuleSet, RulesFileIn, RuleSpec

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"


@dataclass
class RuleFile:
    file: str
    version: str
    profile: str | None
    rules: list[RuleSpec] = field(default_factory=list)
    doc: LoadedYaml | None = None


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
    out = RuleFile(str(path), version, model.profile, doc=doc)
    problems: list[Problem] = []
    for i, rule in enumerate(model.rules):
        spec, found = compile_rule(rule, doc, ("rules", i), version, model.profile)
        problems += found
        if spec is not None:
            out.rules.append(spec)
    return out, problems


def _duplicates(files: list[RuleFile]) -> list[Problem]:
    """A rule id may appear once among the base files and once per profile."""
    problems = []
    seen: dict[tuple[str | None, str], str] = {}
    for f in files:
        for spec in f.rules:
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


def load_rules(path: Path | None = None, profile: str | None = None) -> RuleSet:
    """The rules under `path` (None: the packaged defaults) for `profile` (None: base only)."""
    files, problems = collect(path)
    if problems:
        raise ConfigError(problems)
    profiles = {f.profile for f in files if f.profile}
    if profile is not None and profile not in profiles:
        where = str(DEFAULTS_DIR if path is None else path)
        known = ", ".join(sorted(profiles)) or "none"
        raise ConfigError([Problem(where, None, "profile",
                                   f"unknown profile {profile!r}; profiles here: {known}")])
    used = [f for f in files if f.profile is None or f.profile == profile]
    by_id: dict[str, RuleSpec] = {}
    for f in sorted(used, key=lambda f: f.profile is not None):
        for spec in f.rules:
            by_id[spec.id] = spec  # profile files come last and replace base rules
    return RuleSet(
        version=combined_version(used),
        rules=[r for r in by_id.values() if r.enabled],
        files=[f.file for f in used],
    )
