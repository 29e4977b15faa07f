"""The server fixtures fail loudly, never skip, when what `make test` installs is missing."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.notices import servers


def test_missing_azurite_fails_with_make_test_hint(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(servers, "AZURITE_TABLE", tmp_path / "node_modules" / ".bin" / "azurite-table")
    with pytest.raises(pytest.fail.Exception, match=r"Run `make test`"), servers.azurite(tmp_path / "work"):
        pass
