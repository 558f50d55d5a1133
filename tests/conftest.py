"""Fixtures every test folder may use: the compose stack (tests/stack_fixtures.py) is
shared by tests/e2e and tests/faults as one session stack."""

pytest_plugins = ["stack_fixtures"]
