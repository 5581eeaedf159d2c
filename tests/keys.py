"""The credentials the test suite uses: one place, so the run-wide log check knows them."""

API_KEY = "test-key-0123456789abcdef"
# A second key with the `audit` role (audit trail, legal holds).
AUDIT_KEY = "audit-key-0123456789abcdef"
# API_KEYS naming both: the principal of API_KEY is `analyst`, of AUDIT_KEY `lead`.
NAMED_KEYS = f"analyst:{API_KEY},lead:{AUDIT_KEY}:audit"
# LINK_SIGNING_SECRET for the download-link tests.
LINK_SECRET = "link-secret-0123456789abcdef0123456789"
