"""The test suite's own rules: in CI a skip fails unless it is allowed by name, every allowed
skip names a real test, and every test runs under a time limit."""

import re
from pathlib import Path

import ci_skips

TESTS = Path(__file__).resolve().parent

SKIPPING = """
import pytest

def test_required():
    pytest.skip("a reference is missing")

def test_may_skip():
    pytest.skip("the tool is not on this machine")

def test_runs():
    pass
"""


def test_in_ci_a_skip_fails_unless_the_test_may_skip(pytester, monkeypatch):
    pytester.makepyfile(test_skip_rule_sample=SKIPPING)
    monkeypatch.setitem(ci_skips.MAY_SKIP_IN_CI, "test_skip_rule_sample.py::test_may_skip", "allowed for this test")
    monkeypatch.setenv("CI", "true")
    r = pytester.runpytest_inprocess("-p", "ci_skips", "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1, skipped=1)
    r.stdout.fnmatch_lines(["*test_required*skipped in CI, where this test must run: *a reference is missing*"])


def test_outside_ci_a_skip_is_a_skip(pytester, monkeypatch):
    pytester.makepyfile(test_skip_rule_sample=SKIPPING)
    monkeypatch.setenv("CI", "false")
    pytester.runpytest_inprocess("-p", "ci_skips", "-p", "no:cacheprovider").assert_outcomes(passed=1, skipped=2)


def test_every_allowed_skip_names_a_test_that_exists():
    assert ci_skips.MAY_SKIP_IN_CI, "the list is explicit, not absent"
    for nodeid, reason in ci_skips.MAY_SKIP_IN_CI.items():
        path, name = nodeid.split("::")
        assert re.search(rf"^def {name}\(", (TESTS.parent / path).read_text(), re.M), nodeid
        assert len(reason) > 40, f"{nodeid}: say why"


def test_every_test_has_a_time_limit(pytestconfig):
    """pytest-timeout: one hung Ray call fails its test instead of eating CI's 90 minutes."""
    assert pytestconfig.pluginmanager.hasplugin("timeout")
    assert 0 < float(pytestconfig.getini("timeout")) <= 600
