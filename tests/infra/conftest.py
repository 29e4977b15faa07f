"""Infra drift tests: helpers live in infra_support.py (importable from every test here)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
