"""The credentials the test suite uses: one place, so the run-wide log check knows them."""

API_KEY = "test-key-0123456789abcdef"
