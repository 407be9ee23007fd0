"""Sending one SMS: a small backend interface, chosen by settings.SMS_BACKEND.

- "log" (the default): writes the message to the log and "sends" nothing;
- "http": a JSON POST to SMS_HTTP_URL with `Authorization: Bearer SMS_HTTP_TOKEN`, the shape
  most SMS gateways (or a ten-line adapter in front of one) accept;
- a dotted path to a class with the same `send` method, for any other provider.

Failures raise SendError, which says whether the outcome is *ambiguous* (the request may have
reached the provider: a timeout after sending, a 5xx). tracking.notifications never re-sends an
ambiguous SMS (an SMS POST is not idempotent; RELIABILITY.md JOB-6); a definite failure
(connection refused, 4xx, 429) is retried with back-off.
"""

import http.client
import json
import logging
import uuid
from typing import Protocol
from urllib.parse import urlsplit

from django.conf import settings
from django.utils.module_loading import import_string

logger = logging.getLogger(__name__)


class SendError(Exception):
    """A message could not be handed over. `ambiguous`: it may have been delivered anyway."""

    def __init__(self, message: str, *, ambiguous: bool) -> None:
        super().__init__(message)
        self.ambiguous = ambiguous


class SmsBackend(Protocol):
    def send(self, *, to: str, body: str, reference: str) -> str:
        """Send `body` to the E.164 number `to`; return the provider's message id.

        `reference` is the outbox key, the same on every attempt: pass it on as an idempotency
        key where the provider honours one. Raises SendError."""


class LogBackend:
    """Development default: the message goes to the log, nothing leaves the machine."""

    def send(self, *, to: str, body: str, reference: str) -> str:
        provider_id = f"log-{uuid.uuid4().hex[:12]}"
        logger.info("SMS to %s (%s, %s):\n%s", to, reference, provider_id, body)
        return provider_id


class HttpBackend:
    """POST {"from", "to", "body", "reference"} as JSON; a 2xx answer's "id" (or "message_id",
    "sid") is the provider id. Connecting fails → definite; no or a 5xx answer → ambiguous."""

    def __init__(
        self,
        *,
        url: str | None = None,
        token: str | None = None,
        sender: str | None = None,
        timeout: float | None = None,
    ) -> None:
        self.url = url if url is not None else settings.SMS_HTTP_URL
        self.token = token if token is not None else settings.SMS_HTTP_TOKEN
        self.sender = sender if sender is not None else settings.SMS_FROM
        self.timeout = timeout if timeout is not None else settings.SMS_HTTP_TIMEOUT
        if not self.url:
            raise SendError("SMS_BACKEND is http but SMS_HTTP_URL is not set.", ambiguous=False)

    def _connection(self) -> http.client.HTTPConnection:
        parts = urlsplit(self.url)
        if parts.scheme == "https":
            return http.client.HTTPSConnection(parts.hostname, parts.port, timeout=self.timeout)
        if parts.scheme == "http":
            return http.client.HTTPConnection(parts.hostname, parts.port, timeout=self.timeout)
        raise SendError(f"SMS_HTTP_URL must be http:// or https://, not {self.url!r}.", ambiguous=False)

    def send(self, *, to: str, body: str, reference: str) -> str:
        parts = urlsplit(self.url)
        path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        payload = json.dumps({"from": self.sender, "to": to, "body": body, "reference": reference}).encode()
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": reference,
            "User-Agent": "Doorstep",
        }
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        connection = self._connection()
        try:
            try:
                connection.connect()
            except OSError as exc:  # nothing was sent (refused, unreachable, timed out): try again
                raise SendError(f"Could not connect to the SMS provider: {exc}", ambiguous=False) from exc
            try:
                connection.request("POST", path, body=payload, headers=headers)
                response = connection.getresponse()
                answer = response.read(64_000)
            except (OSError, http.client.HTTPException) as exc:
                raise SendError(
                    f"No answer from the SMS provider after sending ({exc}); it may have gone out.",
                    ambiguous=True,
                ) from exc
        finally:
            connection.close()
        text = answer.decode(errors="replace")[:300]
        if response.status >= 500:
            raise SendError(f"The SMS provider answered {response.status}: {text}", ambiguous=True)
        if response.status >= 300:
            raise SendError(
                f"The SMS provider refused the message ({response.status}): {text}", ambiguous=False
            )
        try:
            data = json.loads(answer or b"{}")
        except ValueError:
            data = {}
        if not isinstance(data, dict):
            data = {}
        return str(data.get("id") or data.get("message_id") or data.get("sid") or "")[:200]


def get_backend() -> SmsBackend:
    name = settings.SMS_BACKEND
    if name == "log":
        return LogBackend()
    if name == "http":
        return HttpBackend()
    return import_string(name)()


def normalise_phone(phone: str) -> str:
    """The number as the provider and inbound replies carry it: no spaces, dashes or brackets."""
    return "".join(ch for ch in phone.strip() if ch.isdigit() or ch == "+")
