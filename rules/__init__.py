"""The YAML rule language, its loader and checker, and the engine that turns readings into
warning levels."""

from rules.engine import RuleEngine
from rules.loader import load_rules
from rules.model import RuleSet, RuleSpec

__all__ = ["RuleEngine", "RuleSet", "RuleSpec", "load_rules"]
