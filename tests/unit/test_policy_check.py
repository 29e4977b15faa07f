"""A checked policy: the validator's answer kept beside the file, used only while file and validator are unchanged."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from unit_support import FULL, OTHER_SUB, REPO, SUB

from shared.core import policy_check
from shared.core.policy import load_policy
from shared.core.policy_check import checked_path, load_checked_policy, write_checked_copy
from shared.errors import PolicyError

RICH: dict[str, Any] = {
    **copy.deepcopy(FULL),
    "mode": "enforce",
    "exemptionTag": "school:exempt",
    "labs": {"allowedVmSizes": ["Classic_Fsv2_2_4GB_128_S_SSD", "Classic_Dsv4_4_16GB_128_P_SSD"]},
    "overrides": {
        "subscriptions": {OTHER_SUB: {"autoShutdown": {"maxIdleDelay": "PT1H30M"}}},
        "resourceGroups": {f"{SUB}/rg-course": {"connection": None, "autoShutdown": {"maxDisconnectDelay": "PT0.5S"}}},
    },
}


def policy_file(tmp_path: Path, data: dict[str, Any] | None = None, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(RICH if data is None else data, sort_keys=False), encoding="utf-8")
    return path


@pytest.mark.parametrize("override", [None, "audit", "enforce"])
def test_the_checked_copy_gives_the_validators_answer(tmp_path: Path, override: Any) -> None:
    path = policy_file(tmp_path)
    write_checked_copy(path)
    from_copy, validated = load_checked_policy(path, override), load_policy(path, override)
    assert from_copy.load_note == "checked copy policy.yaml.checked.json"
    assert validated.load_note == "validated at load"
    assert from_copy == validated  # every scope's rules, the mode and where it came from, the tag, the source
    assert from_copy.mode_source == validated.mode_source
    for scope, rules in validated.describe().items():
        assert from_copy.describe()[scope].bounds == rules.bounds


def test_a_policy_without_a_mode_keeps_the_default_and_says_so(tmp_path: Path) -> None:
    data = {k: v for k, v in RICH.items() if k != "mode"}
    path = policy_file(tmp_path, data)
    write_checked_copy(path)
    loaded = load_checked_policy(path)
    assert loaded.load_note.startswith("checked copy") and loaded == load_policy(path)
    assert loaded.mode == "audit" and loaded.mode_source == load_policy(path).mode_source


def test_an_edited_policy_is_validated_again_never_read_from_a_stale_copy(tmp_path: Path) -> None:
    path = policy_file(tmp_path)
    write_checked_copy(path)
    path.write_text(path.read_text(encoding="utf-8").replace("PT1H30M", "PT2H"), encoding="utf-8")
    loaded = load_checked_policy(path)
    assert loaded.load_note == "validated at load"
    assert loaded.subscriptions[OTHER_SUB].get("maxIdleDelay").total_seconds() == 7200
    path.write_text("mode: bogus\n", encoding="utf-8")  # and a policy made bad after its check is refused
    with pytest.raises(PolicyError, match="bogus"):
        load_checked_policy(path)


@pytest.mark.parametrize(
    "spoil",
    [
        lambda doc: {**doc, "validatorSha256": "0" * 64},  # another labguard version wrote it
        lambda doc: {**doc, "format": 2},
        lambda doc: {**doc, "baseline": [["noSuchSetting", "value", "x"]]},
        lambda doc: {**doc, "baseline": [["maxIdleDelay", "delay", ["x"]]]},
        lambda doc: {**doc, "mode": "loose"},
        lambda doc: [doc],
    ],
)
def test_a_copy_it_cannot_trust_or_read_means_validating_the_file(tmp_path: Path, spoil: Any) -> None:
    path = policy_file(tmp_path)
    copy_path = Path(write_checked_copy(path))
    copy_path.write_text(json.dumps(spoil(json.loads(copy_path.read_text(encoding="utf-8")))), encoding="utf-8")
    loaded = load_checked_policy(path)
    assert loaded.load_note == "validated at load" and loaded == load_policy(path)


@pytest.mark.parametrize("text", [b"\xff{not json", b"[" * 100_000 + b"]" * 100_000])
def test_a_copy_that_is_not_json_or_too_deep_means_validating_the_file(tmp_path: Path, text: bytes) -> None:
    path = policy_file(tmp_path)
    Path(checked_path(path)).write_bytes(text)
    assert load_checked_policy(path).load_note == "validated at load"


def test_a_bad_policy_gets_no_copy(tmp_path: Path) -> None:
    path = policy_file(tmp_path, {"mode": "bogus"})
    with pytest.raises(PolicyError):
        write_checked_copy(path)
    assert not Path(checked_path(path)).exists()


def test_a_missing_policy_is_reported_by_the_validator(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="cannot read the policy file"):
        load_checked_policy(tmp_path / "absent.yaml")


def test_the_bundled_policy_has_a_current_checked_copy() -> None:
    """Shipped beside policy.yaml (the app's package carries both): regenerate with
    ``labguard check-policy policy.yaml --write-checked`` after editing the policy or the validator."""
    loaded = load_checked_policy(REPO / "policy.yaml")
    assert loaded.load_note == "checked copy policy.yaml.checked.json", (
        "policy.yaml.checked.json is stale: run labguard check-policy policy.yaml --write-checked"
    )
    assert loaded == load_policy(REPO / "policy.yaml")


def test_a_new_instance_loads_the_checked_policy_without_the_validators_imports() -> None:
    """What the first event pays: neither pydantic nor PyYAML is imported when the copy is current."""
    probe = (
        "import sys\n"
        "from shared.core.policy_check import load_checked_policy\n"
        "policy = load_checked_policy('policy.yaml')\n"
        "print(policy.load_note, sorted(m for m in ('pydantic', 'yaml') if m in sys.modules))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120, check=True
    )
    assert done.stdout.strip() == "checked copy policy.yaml.checked.json []"


def test_another_validator_library_version_makes_the_copy_stale(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The copy names the libraries' versions too: a pydantic or PyYAML upgrade may judge a policy differently,
    and a version file that cannot be read means validating."""
    path = policy_file(tmp_path)
    write_checked_copy(path)
    assert load_checked_policy(path).load_note.startswith("checked copy")
    fake = tmp_path / "site" / "yaml"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("__version__ = '7.0.0'\n", encoding="utf-8")
    import importlib.util

    real_find_spec = importlib.util.find_spec

    def find_spec(name: str, *args: Any) -> Any:
        if name == "yaml":
            return importlib.util.spec_from_file_location("yaml", fake / "__init__.py")
        return real_find_spec(name, *args)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)
    policy_check.validator_digest.cache_clear()
    try:
        assert load_checked_policy(path).load_note == "validated at load"
        (fake / "__init__.py").unlink()
        policy_check.validator_digest.cache_clear()
        assert load_checked_policy(path).load_note == "validated at load"  # unreadable: no traceback
    finally:
        policy_check.validator_digest.cache_clear()


def test_the_validator_digest_covers_its_sources() -> None:
    names = set(policy_check._VALIDATOR_SOURCES)
    assert {"policy.py", "rules.py", "governed.py", "durations.py", "policy_check.py"} <= names
    assert {package for package, _ in policy_check._LIBRARY_VERSION_FILES} == {"pydantic", "yaml"}
    assert len(policy_check.validator_digest()) == 64
