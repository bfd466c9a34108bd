"""In CI (``CI=true``) a skipped test fails the run, except the few listed here with the reason.

Loaded by tests/conftest.py; a pytest plugin of its own so that its rule can be tested
(tests/test_suite.py). Outside CI a test may skip and says why (``-ra`` prints the reasons)."""

from __future__ import annotations

import os
import platform
import sys

import pytest

#: The only tests that may skip in CI, with the reason. Any other skip fails a CI run.
MAY_SKIP_IN_CI: dict[str, str] = {
    "tests/infra/test_terraform.py::test_terraform_validate_offline": (
        "Terraform and its AWS provider come with the machine image (/usr/local/bin/terraform, "
        "/opt/tf-plugins); no package registry this machine reaches ships them, so the repo cannot "
        "install them. The HCL is parsed and cross-checked by the other tests of that module."
    ),
}

#: yuface -- libfacedetection's C++ detector, the reference the shipped YuNet weights were read
#: from -- has wheels for CPython 3.10/3.11 on Linux x86_64 only; elsewhere (the Python 3.13 leg
#: of .ci/run) its parity tests skip. The shipped file is still checked by its sha256 there.
YUFACE_WHEELS = sys.version_info < (3, 12) and sys.platform == "linux" and platform.machine() == "x86_64"
if not YUFACE_WHEELS:
    MAY_SKIP_IN_CI.update(
        {
            f"tests/stages/detect/test_yunet.py::{name}": "yuface (the reference) has no wheel for this Python or "
            "platform"
            for name in (
                "test_the_shipped_weights_are_libfacedetections_bit_for_bit",
                "test_a_libfacedetection_library_is_taken_as_weights_too",
                "test_matches_libfacedetection_itself_on_real_photos",
            )
        }
    )


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """In CI a skip is a failure unless the test is in MAY_SKIP_IN_CI."""
    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and in_ci() and not hasattr(rep, "wasxfail") and item.nodeid.split("[")[0] not in MAY_SKIP_IN_CI:
        reason = rep.longrepr[2] if isinstance(rep.longrepr, tuple) else str(rep.longrepr)
        rep.outcome = "failed"
        rep.longrepr = (
            f"skipped in CI, where this test must run: {reason} "
            "(tests allowed to skip: MAY_SKIP_IN_CI in tests/ci_skips.py)"
        )
