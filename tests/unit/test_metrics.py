from __future__ import annotations

import pytest

from services.kit.metrics import close_code_label


@pytest.mark.parametrize(
    ("code", "label"),
    [
        (1000, "1000"),
        (1001, "1001"),
        (1006, "1006"),
        (1013, "1013"),
        (4001, "4001"),
        (4108, "4108"),
        (4129, "4129"),
        (3001, "3xxx"),
        (3999, "3xxx"),
        (4321, "4xxx"),
        (4999, "4xxx"),
        (1016, "other"),
        (2999, "other"),
        (5000, "other"),
    ],
)
def test_close_code_labels_are_bounded(code, label):
    assert close_code_label(code) == label


def test_no_client_chosen_code_adds_a_label():
    labels = {close_code_label(code) for code in range(0, 70000)}
    assert len(labels) <= 16 + 8 + 3  # RFC 6455's codes, the kit's own, three buckets
