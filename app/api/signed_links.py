"""Download links a browser can follow: a content URL that carries its own authorisation.

A link cannot send `Authorization`, so, like an S3 presigned URL, it carries an expiry, the
name of the key it was issued to (`kid`) and an HMAC-SHA256 over the method, the path, the
expiry and that name: `?expires=<unix seconds>&kid=<key name>&sig=<base64url>`. The secret
is LINK_SIGNING_SECRET, separate from the API keys, shared by every replica (a link issued by
one is good on all) and never logged. A link reads one record's bytes (GET, or HEAD, which
answers the same headers) until it expires; removing its key from API_KEYS ends it sooner.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from pydantic import SecretStr

from app.api.errors import ApiError

# The query parameters of a signed link; any of them on a request makes it one.
LINK_PARAMETERS = ("expires", "kid", "sig")
SIGNED_METHOD = "GET"  # HEAD is checked as GET: it answers the same headers, no body


@dataclass(frozen=True)
class SignedLink:
    url: str  # the path and query: relative, so it works behind any proxy or load balancer
    expires_at: int  # unix seconds


def forbidden_link(detail: str) -> ApiError:
    return ApiError(403, "invalid_link", detail)


class LinkSigner:
    def __init__(self, secret: SecretStr, max_seconds: int) -> None:
        self._secret = secret.get_secret_value().encode()
        self.max_seconds = max_seconds

    def sign(self, path: str, key_name: str, seconds: int) -> SignedLink:
        """A link to GET `path` for `seconds` (at most `max_seconds`), issued to `key_name`."""
        expires = int(time.time()) + min(seconds, self.max_seconds)
        query = urlencode(
            {"expires": expires, "kid": key_name, "sig": self._signature(path, expires, key_name)}
        )
        return SignedLink(f"{path}?{query}", expires)

    def verify(self, method: str, path: str, query: dict[str, str]) -> str:
        """The key name a link to `path` was issued to; 403 if it is altered, expired, or
        not for this method. Expiry is checked after the signature: an altered expiry is an
        altered link."""
        if method not in ("GET", "HEAD"):
            raise forbidden_link("a download link is for GET or HEAD only")
        missing = [name for name in LINK_PARAMETERS if not query.get(name)]
        if missing:
            raise forbidden_link(f"a download link needs {', '.join(LINK_PARAMETERS)}")
        expires_text, key_name, signature = (query[name] for name in LINK_PARAMETERS)
        if not expires_text.isdigit() or len(expires_text) > 12:
            raise forbidden_link("the link's expiry is not a time")
        expires = int(expires_text)
        expected = self._signature(path, expires, key_name)
        if not hmac.compare_digest(expected.encode(), signature.encode()):
            raise forbidden_link("the link's signature does not match: it was altered")
        if expires < time.time():
            raise forbidden_link("the link has expired: ask for a new one")
        return key_name

    def _signature(self, path: str, expires: int, key_name: str) -> str:
        message = "\n".join((SIGNED_METHOD, path, str(expires), key_name)).encode()
        digest = hmac.new(self._secret, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode("ascii").rstrip("=")
