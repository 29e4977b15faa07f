"""A checked policy: the validator's result kept beside the policy file, so a new instance loads the policy
without validating it again (the validator's imports, pydantic and PyYAML, were about a third of a new
instance's first event).

``labguard check-policy --write-checked`` validates ``policy.yaml`` and writes ``policy.yaml.checked.json``
beside it: the effective rules per scope, with the SHA-256 of the policy file's bytes and of the validator's
own source files. :func:`load_checked_policy` uses that copy only when both match what it reads now (the same
policy bytes, judged by the same validator code); otherwise (no copy, an edited policy, another labguard
version, a copy it cannot read) it validates the file, exactly as without a copy. A copy changes how fast the
answer comes, never the answer: a bad policy is refused either way, because a copy exists only for a policy
the validator accepted.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from datetime import timedelta
from pathlib import Path
from types import MappingProxyType
from typing import Any

from shared.core.rules import MAX_POLICY_BYTES, Mode, Policy, Rules

CHECKED_SUFFIX = ".checked.json"
FORMAT = 1
#: The validator's source: a change to any of them makes every checked copy stale.
_VALIDATOR_SOURCES = ("policy.py", "rules.py", "governed.py", "durations.py", "policy_check.py")
#: And the libraries it validates with: the files that carry their versions (found, never imported).
_LIBRARY_VERSION_FILES = (("pydantic", "version.py"), ("yaml", "__init__.py"))
_HERE = Path(__file__).resolve().parent


def checked_path(policy_path: str | os.PathLike[str]) -> str:
    """Where the checked copy of a policy file lives: beside it, ``<file>.checked.json``."""
    return os.fspath(policy_path) + CHECKED_SUFFIX


@functools.cache
def validator_digest() -> str:
    """SHA-256 over the validator's source files and its libraries' version files (read once per process): another
    labguard, pydantic or PyYAML may judge a policy differently. OSError when a file cannot be read."""
    import importlib.util

    digest = hashlib.sha256()
    for name in _VALIDATOR_SOURCES:
        digest.update(name.encode() + b"\0" + (_HERE / name).read_bytes() + b"\0")
    for package, file in _LIBRARY_VERSION_FILES:
        spec = importlib.util.find_spec(package)  # a top-level name: nothing is imported
        if spec is None or spec.origin is None:
            raise OSError(f"{package} is not installed")
        digest.update(package.encode() + b"\0" + (Path(spec.origin).parent / file).read_bytes() + b"\0")
    return digest.hexdigest()


def checked_text(policy: Policy, policy_bytes: bytes, *, mode_in_file: bool) -> str:
    """The checked copy of ``policy``, validated from exactly ``policy_bytes``."""
    document = {
        "about": "labguard's checked copy of the policy beside it (labguard check-policy --write-checked); "
        "used only while the policy file and labguard's validator are unchanged",
        "format": FORMAT,
        "policySha256": hashlib.sha256(policy_bytes).hexdigest(),
        "validatorSha256": validator_digest(),
        "mode": policy.mode,
        "modeInFile": mode_in_file,
        "exemptionTag": policy.exemption_tag,
        "baseline": _rules_json(policy.baseline),
        "subscriptions": {key: _rules_json(rules) for key, rules in policy.subscriptions.items()},
        "resourceGroups": {key: _rules_json(rules) for key, rules in policy.resource_groups.items()},
    }
    return json.dumps(document, indent=1, ensure_ascii=False) + "\n"


def load_checked_policy(
    path: str | os.PathLike[str],
    mode_override: Mode | None = None,
    *,
    override_source: str = "app setting LABGUARD_MODE",
) -> Policy:
    """:func:`shared.core.policy.load_policy`'s answer, from the checked copy when it is current (then neither
    pydantic nor PyYAML is imported), else by validating the file. ``Policy.load_note`` says which."""
    source = os.fspath(path)
    policy = _from_checked_copy(source)
    if policy is None:
        from shared.core.policy import load_policy

        return load_policy(path, mode_override, override_source=override_source)
    if mode_override is not None:
        policy = dataclasses.replace(policy, mode=mode_override, mode_source=override_source)
    return policy


def _from_checked_copy(source: str) -> Policy | None:
    try:
        with open(source, "rb") as handle:
            policy_bytes = handle.read(MAX_POLICY_BYTES + 1)
        with open(checked_path(source), "rb") as handle:
            document = json.loads(handle.read(4 * MAX_POLICY_BYTES))
    except (OSError, ValueError, RecursionError):  # no copy, or none it can read (or no file: the validator says so)
        return None
    try:
        validator = validator_digest()
    except OSError:  # a source or library file missing: no way to tell the copy is current
        return None
    try:
        if (
            not isinstance(document, dict)
            or document.get("format") != FORMAT
            or document.get("policySha256") != hashlib.sha256(policy_bytes).hexdigest()
            or document.get("validatorSha256") != validator
        ):
            return None
        mode = document["mode"]
        if mode not in ("audit", "enforce") or not isinstance(document["modeInFile"], bool):
            return None
        tag = document["exemptionTag"]
        if not isinstance(tag, str):
            return None
        return Policy(
            mode=mode,
            source=source,
            baseline=_rules(document["baseline"]),
            subscriptions=MappingProxyType({str(k): _rules(v) for k, v in document["subscriptions"].items()}),
            resource_groups=MappingProxyType({str(k): _rules(v) for k, v in document["resourceGroups"].items()}),
            exemption_tag=tag,
            mode_source=f"policy file {source}" if document["modeInFile"] else Policy.mode_source,
            load_note=f"checked copy {os.path.basename(checked_path(source))}",
        )
    except (KeyError, TypeError, ValueError, AttributeError, OverflowError):  # a copy it cannot read: validate
        return None


def _rules_json(rules: Rules) -> list[list[Any]]:
    out: list[list[Any]] = []
    for key, bound in rules.bounds:
        if isinstance(bound, bool):  # before the others: a bool is not text, and never a delay
            out.append([key, "flag", bound])
        elif isinstance(bound, timedelta):
            out.append([key, "delay", [bound.days, bound.seconds, bound.microseconds]])
        elif isinstance(bound, tuple):
            out.append([key, "oneOf", list(bound)])
        else:
            out.append([key, "value", bound])
    return out


def _rules(rows: list[list[Any]]) -> Rules:
    bounds: dict[str, Any] = {}
    for key, kind, value in rows:
        if kind == "flag" and isinstance(value, bool):
            bounds[key] = value
        elif kind == "delay":
            days, seconds, microseconds = (int(part) for part in value)
            bounds[key] = timedelta(days=days, seconds=seconds, microseconds=microseconds)
        elif kind == "oneOf" and isinstance(value, list) and all(isinstance(item, str) for item in value):
            bounds[key] = tuple(value)
        elif kind == "value" and isinstance(value, str):
            bounds[key] = value
        else:
            raise ValueError(f"unreadable bound of {key}")
    return Rules.of(**bounds)  # unknown keys raise TypeError; table order, as the validator builds them


def write_checked_copy(path: str | os.PathLike[str]) -> str:
    """Validate a policy file and write its checked copy beside it (atomically); returns the copy's path.
    Raises PolicyError, writing nothing, when the policy is refused or changes while it is checked."""
    from shared.core.policy import load_policy
    from shared.errors import PolicyError

    source = os.fspath(path)
    before = _file_bytes(source)
    policy = load_policy(source)  # refuses a bad policy (and an unreadable file) in its own words
    policy_bytes = _file_bytes(source)
    if policy_bytes is None or policy_bytes != before:
        raise PolicyError(source, "", "the policy file changed while it was being checked; check it again")
    target = checked_path(source)
    text = checked_text(policy, policy_bytes, mode_in_file=policy.mode_source != Policy.mode_source)
    temporary = f"{target}.{os.getpid()}.tmp"
    try:
        with open(temporary, "w", encoding="utf-8") as handle:
            handle.write(text)
        os.replace(temporary, target)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)
    return target


def _file_bytes(source: str) -> bytes | None:
    try:
        with open(source, "rb") as handle:
            return handle.read()
    except OSError:
        return None
