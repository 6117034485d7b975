"""Fixtures for the study tests (helpers live in study_fixtures.py, importable by name)."""

from __future__ import annotations

from pathlib import Path

import pytest

from study_fixtures import consent_all, create, make_run


def pytest_configure(config):
    config.addinivalue_line("markers", "browser: drives headless Chromium (deselect with -m 'not browser')")


@pytest.fixture
def gen_file(tmp_path) -> Path:
    return make_run(tmp_path)


@pytest.fixture
def study(tmp_path, gen_file) -> Path:
    """12 model-vs-reference items, 4 annotators, 3 per item -> 9 real items each, plus 1 check each."""
    return consent_all(create(tmp_path / "study", gen_file, "--annotators", "4", "--raters-per-item", "3",
                              "--attention-checks", "10%", "--max-words", "12"))
