"""The stuck-run session fixtures (`demo_environment`, `stuck_runs`) live in tests/conftest.py:
the guarantees suite (tests/guarantees) shares the same staged server and runs.
"""
