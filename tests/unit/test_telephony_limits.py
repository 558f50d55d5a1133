from __future__ import annotations

import pytest

from services.kit.settings import SettingsError
from services.telephony.limits import TelephonyLimits


def test_limits_default_and_read_from_the_environment():
    assert TelephonyLimits.from_env({}) == TelephonyLimits()
    limits = TelephonyLimits.from_env(
        {
            "WWWS_MAX_WATCHED_USERS": "50",
            "WWWS_CALLS_PER_CALLER": "0",
            "WWWS_CALLEE_WINDOW_SECONDS": "30.5",
            "WWWS_CALL_LEASE_SECONDS": "0.5",
        }
    )
    assert limits.max_watched_users == 50
    assert limits.calls_per_caller == 0
    assert limits.callee_window_seconds == 30.5
    assert limits.stale_after == 2.0


def test_bad_limits_are_named_together():
    with pytest.raises(SettingsError) as raised:
        TelephonyLimits.from_env({"WWWS_MAX_BLOCKED_USERS": "many", "WWWS_CALL_LEASE_SECONDS": "0"})
    assert "WWWS_MAX_BLOCKED_USERS must be an integer" in str(raised.value)
    assert "WWWS_CALL_LEASE_SECONDS must be at least 0.05" in str(raised.value)
