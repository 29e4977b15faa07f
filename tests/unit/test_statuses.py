"""Every outcome the reconcile core can report is counted on the compliance page and the snapshot."""

from typing import get_args

from shared.reconcile import Status
from shared.report_html import _STATES
from shared.snapshot import STATUSES


def test_the_snapshot_counts_every_outcome_status():
    assert set(STATUSES) == set(get_args(Status))


def test_the_page_has_a_label_and_colour_for_every_outcome_status():
    assert set(_STATES) == set(get_args(Status))
