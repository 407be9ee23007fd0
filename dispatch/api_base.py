"""What every integration endpoint shares: idempotent POSTs, rate limits, stable pages, error
shapes in the schema. Viewsets get all of it by subclassing :class:`IntegrationAPIMixin`."""

import hashlib
import json
from datetime import timedelta

from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter
from rest_framework import serializers
from rest_framework.exceptions import APIException, ValidationError
from rest_framework.filters import OrderingFilter
from rest_framework.permissions import AllowAny
from rest_framework.renderers import JSONRenderer
from rest_framework.response import Response

from dispatch.api_auth import ApiIpRateThrottle, ApiKeyRateThrottle, principal_id
from dispatch.models import IdempotencyRecord
from dispatch.pagination import StablePagination
from dispatch.selectors import organization_for

IDEMPOTENCY_HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
# Response headers worth replaying with the stored body.
REPLAYED_HEADERS = ("Location",)


# --- Pages and order ------------------------------------------------------------------------


class StableOrderingFilter(OrderingFilter):
    """`?ordering=field,-other`; the primary key always breaks ties."""

    def get_ordering(self, request, queryset, view):
        ordering = list(super().get_ordering(request, queryset, view) or ())
        if not any(field.lstrip("-") in ("pk", "id") for field in ordering):
            ordering.append("pk")
        return ordering


class ApiKeyScheme(OpenApiAuthenticationExtension):
    """How the schema describes dispatch.api_auth.ApiKeyAuthentication (defined here, not there:
    DRF imports authentication classes while it is still loading itself)."""

    target_class = "dispatch.api_auth.ApiKeyAuthentication"
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "An organisation API key (made under Settings → API keys in the portal): "
            "`Authorization: Bearer dsk_…`. It acts for its organisation with a dispatcher's reach.",
        }


# --- Error shapes -----------------------------------------------------------------------------


class ErrorSerializer(serializers.Serializer):
    detail = serializers.CharField(help_text="What is wrong, in words a person can act on.")


FIELD_ERRORS = {
    "type": "object",
    "description": "Field-level messages: {field: [message, …]} (nested for list and object fields); "
    "`non_field_errors` or `detail` for the request as a whole.",
    "additionalProperties": True,
    "example": {"recipient_name": ["This field may not be blank."]},
}


class DoorstepAutoSchema(AutoSchema):
    """Adds the error answers every operation can give, and the Idempotency-Key header on POSTs
    of idempotent views, so the schema (and schemathesis) knows every status we send."""

    def get_override_parameters(self):
        parameters = list(super().get_override_parameters())
        if self.method == "POST" and isinstance(self.view, IdempotencyMixin):
            parameters.append(
                OpenApiParameter(
                    IDEMPOTENCY_HEADER,
                    {"type": "string", "minLength": 1, "maxLength": 255},
                    OpenApiParameter.HEADER,
                    description="Up to 255 characters of your choosing (a UUID is good). Repeating a "
                    "request with the same key replays the first answer (header Idempotent-Replayed: "
                    "true); the same key with a different body is a 422; while the first is in "
                    "flight, a 409. Keys are kept for IDEMPOTENCY_KEY_HOURS (24 h).",
                )
            )
        if self.view.get_throttles():
            parameters.append(
                OpenApiParameter(
                    "Retry-After",
                    OpenApiTypes.INT,
                    OpenApiParameter.HEADER,
                    response=[429],
                    description="Seconds to wait before trying again.",
                )
            )
        return parameters

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        errors: dict[str, tuple] = {}
        has_params = "{" in self.path
        if self.method in ("POST", "PUT", "PATCH") or self.method == "GET":
            errors["400"] = (FIELD_ERRORS, "The request is invalid: see the field messages.")
        if not all(isinstance(p, AllowAny) for p in self.view.get_permissions()):
            errors["401"] = (ErrorSerializer, "No or invalid credentials.")
            errors["403"] = (ErrorSerializer, "These credentials may not use this endpoint.")
        if has_params:
            errors["404"] = (ErrorSerializer, "No such object in your organisation.")
        elif self.method == "GET" and self._is_list_view():
            errors["404"] = (ErrorSerializer, "No such page.")
        if self.method in ("POST", "PATCH", "PUT", "DELETE") and has_params:
            errors["409"] = (ErrorSerializer, "The object's state does not allow this, or it changed.")
        if self.method == "POST" and isinstance(self.view, IdempotencyMixin):
            errors.setdefault("409", (ErrorSerializer, "A request with this Idempotency-Key is in flight."))
            errors["422"] = (ErrorSerializer, "This Idempotency-Key was used with a different request.")
        if self.view.get_throttles():
            errors["429"] = (ErrorSerializer, "Too many requests: wait Retry-After seconds.")
        for code, (schema, description) in errors.items():
            if code not in responses:
                response = self._get_response_for_code(schema, code, direction=direction)
                response["description"] = description
                responses[code] = response
        return responses


# --- Idempotency-Key ------------------------------------------------------------------------


class IdempotencyConflict(APIException):
    status_code = 409
    default_detail = "A request with this Idempotency-Key is still being handled; retry in a moment."
    default_code = "idempotency_in_flight"


class IdempotencyMismatch(APIException):
    status_code = 422
    default_detail = (
        "This Idempotency-Key was already used with a different request (method, path or body). "
        "Use a new key for a new request."
    )
    default_code = "idempotency_key_reused"


class _Replay(Exception):
    def __init__(self, record: IdempotencyRecord):
        self.record = record


def _file_digest(upload) -> str:
    digest = hashlib.sha256()
    for chunk in upload.chunks():
        digest.update(chunk)
    upload.seek(0)
    return digest.hexdigest()


def request_fingerprint(request) -> str:
    """SHA-256 over method, path with query and the parsed body (so key order in JSON and the
    multipart boundary do not matter; files count by content)."""
    data = request.data
    if hasattr(data, "lists"):  # QueryDict: form or multipart
        body = [
            [name, [_file_digest(v) if hasattr(v, "chunks") else str(v) for v in values]]
            for name, values in sorted(data.lists())
        ]
    else:
        body = data
    text = json.dumps(body, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(f"{request.method} {request.get_full_path()}\n{text}".encode()).hexdigest()


def _in_flight_timeout() -> timedelta:
    # A first request that never finished (its process was killed) holds its key this long;
    # its writes rolled back with it, so running it again is safe.
    return timedelta(seconds=getattr(settings, "IDEMPOTENCY_IN_FLIGHT_SECONDS", 120))


class IdempotencyMixin:
    """POST with an `Idempotency-Key` header: the first answer is kept and replayed.

    The reservation (a row with status_code NULL) is committed before the handler runs, so a
    concurrent repeat sees it (the unique (principal, key) constraint decides who is first)
    and gets a 409. The handler's writes and the stored answer commit in one transaction: a
    process killed mid-request leaves neither, and the key is free again after the in-flight
    timeout. 5xx answers are not stored (the row is deleted), so a retry runs again.
    """

    _idempotency: IdempotencyRecord | None = None
    _idempotency_done = False

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        self._idempotency = None
        key = request.headers.get(IDEMPOTENCY_HEADER)
        if request.method != "POST" or key is None:
            return
        if not key or len(key) > 255:
            raise ValidationError({"detail": f"{IDEMPOTENCY_HEADER}: send between 1 and 255 characters."})
        principal, organization = principal_id(request), organization_for(request.user)
        if principal is None or organization is None:
            return
        fingerprint = request_fingerprint(request)
        record = self._idempotency_reserve(principal, organization, key, request, fingerprint)
        self._idempotency = record
        name = request.method.lower()
        handler = getattr(self, name)

        def run(request, *args, **kwargs):
            with transaction.atomic():
                response = handler(request, *args, **kwargs)
                if response.status_code < 500:
                    self._idempotency_store(record, response)
            return response

        setattr(self, name, run)

    def _idempotency_reserve(self, principal, organization, key, request, fingerprint) -> IdempotencyRecord:
        try:
            with transaction.atomic():
                return IdempotencyRecord.objects.create(
                    organization=organization,
                    principal=principal,
                    key=key,
                    method=request.method,
                    path=request.path[:500],
                    request_hash=fingerprint,
                )
        except IntegrityError:
            pass
        existing = IdempotencyRecord.objects.filter(principal=principal, key=key).first()
        if existing is None:  # the first attempt failed with a 5xx just now and let the key go
            raise IdempotencyConflict()
        if existing.request_hash != fingerprint:
            raise IdempotencyMismatch()
        if existing.status_code is not None:
            raise _Replay(existing)
        now = timezone.now()
        abandoned = IdempotencyRecord.objects.filter(
            pk=existing.pk, status_code=None, created_at__lt=now - _in_flight_timeout()
        ).update(created_at=now)
        if abandoned != 1:
            raise IdempotencyConflict()
        return existing

    def _idempotency_store(self, record: IdempotencyRecord, response) -> None:
        body = None if response.data is None else json.loads(JSONRenderer().render(response.data))
        headers = {name: response[name] for name in REPLAYED_HEADERS if response.has_header(name)}
        IdempotencyRecord.objects.filter(pk=record.pk).update(
            status_code=response.status_code,
            response_body=body,
            response_headers=headers,
            completed_at=timezone.now(),
        )
        self._idempotency_done = True

    def handle_exception(self, exc):
        if isinstance(exc, _Replay):
            record = exc.record
            return Response(
                record.response_body,
                status=record.status_code,
                headers={**record.response_headers, REPLAYED_HEADER: "true"},
            )
        try:
            return super().handle_exception(exc)
        except Exception:
            # An unhandled error (a 500 on the way): let the key go so that a retry runs again.
            if self._idempotency is not None and not self._idempotency_done:
                IdempotencyRecord.objects.filter(pk=self._idempotency.pk, status_code=None).delete()
                self._idempotency_done = True
            raise

    def finalize_response(self, request, response, *args, **kwargs):
        record = self._idempotency
        if record is not None and not self._idempotency_done:
            # The handler raised (its writes rolled back) or answered 5xx inside the atomic block.
            if response.status_code < 500:
                self._idempotency_store(record, response)
            else:
                IdempotencyRecord.objects.filter(pk=record.pk, status_code=None).delete()
            self._idempotency_done = True
        return super().finalize_response(request, response, *args, **kwargs)


# --- The base of every integration viewset ----------------------------------------------------


class IntegrationAPIMixin(IdempotencyMixin):
    """Rate limits per API key and per address, idempotent POSTs, stable pages and ordering.

    Put it first in the bases of a viewset (before DRF's mixins), together with
    `permission_classes = [IsPortalUser]` and a queryset from a `*_visible_to` selector; see
    dispatch/permissions.py for the whole pattern.
    """

    throttle_classes = [ApiKeyRateThrottle, ApiIpRateThrottle]
    pagination_class = StablePagination
