"""Organisation API keys on the REST API: the header, the principal a key acts as, its throttles.

Send a key as ``Authorization: Bearer dsk_<prefix>_<secret>``. The key authenticates as an
:class:`ApiKeyPrincipal`: ``is_authenticated`` is True, ``pk`` is None, and its
``_doorstep_membership`` is preset to an unsaved dispatcher Membership of the key's
organisation, so ``dispatch.selectors.membership_for`` / ``*_visible_to`` and
``dispatch.permissions.IsPortalUser`` treat it like a dispatcher of that organisation (and
``tracking.api.IsDriver`` refuses it: keys never reach driver endpoints). It is a DRF
authenticator only: the portal's pages use Django sessions, which a key never opens.

A key has no user behind it, so services get ``by=None`` from :func:`request_actor` (the
StopEvent/Plan actor FK stays empty; the key is not a person).

Also here: :class:`UserTokenAuthentication`, DRF's user tokens (the driver app's) in one query
with the membership and driver profile.
"""

from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser
from django.utils import timezone
from django.utils.translation import gettext_lazy as _
from rest_framework import authentication, exceptions
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle

from dispatch.auth_backends import member_for_token
from dispatch.models import ApiKey, Membership
from dispatch.selectors import api_key_for_secret
from dispatch.services import api_key_touch

KEYWORD = "Bearer"
# last_used_at is written at most this often per key, not on every request.
LAST_USED_RESOLUTION = timedelta(minutes=1)


class ApiKeyPrincipal:
    """Who a request authenticated with an API key is: the key's organisation, as a dispatcher."""

    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False
    pk = None
    id = None

    def __init__(self, api_key: ApiKey):
        self.api_key = api_key
        self._doorstep_membership = Membership(
            organization=api_key.organization, role=Membership.Role.DISPATCHER
        )

    @property
    def username(self) -> str:
        return f"api-key:{self.api_key.prefix}"

    def get_username(self) -> str:
        return self.username

    def get_full_name(self) -> str:
        return f"API key “{self.api_key.name}”"

    def has_perm(self, perm, obj=None) -> bool:
        return False

    def has_perms(self, perm_list, obj=None) -> bool:
        return False

    def has_module_perms(self, app_label) -> bool:
        return False

    def __str__(self) -> str:
        return self.username


def request_actor(request) -> AbstractBaseUser | None:
    """The person behind a request for services' `by=`: the user, or None for an API key."""
    user = request.user
    return user if isinstance(user, AbstractBaseUser) and user.is_authenticated else None


def principal_id(request) -> str | None:
    """Who sent the request, "key:<id>" or "user:<id>" (Idempotency-Keys are scoped by it)."""
    if isinstance(request.auth, ApiKey):
        return f"key:{request.auth.pk}"
    actor = request_actor(request)
    return f"user:{actor.pk}" if actor is not None else None


class UserTokenAuthentication(authentication.TokenAuthentication):
    """DRF's ``Authorization: Token …`` (the API's default in place of DRF's own class, so the
    schema has one ``tokenAuth``), loading the user's membership, its organisation and his driver
    profile with the token in one plain statement (dispatch.auth_backends.member_for_token): the
    GPS ingest, the hottest endpoint, made three ORM queries for them. Unknown, deleted or
    inactive → 401, as DRF's. ``membership_for`` and ``user.driver`` then read what it loaded.
    """

    def authenticate_credentials(self, key):
        found = member_for_token(key)
        if found is None:
            raise exceptions.AuthenticationFailed(_("Invalid token."))
        user, token = found
        if not user.is_active:
            raise exceptions.AuthenticationFailed(_("User inactive or deleted."))
        return user, token


class ApiKeyAuthentication(authentication.BaseAuthentication):
    """``Authorization: Bearer dsk_…``. An unknown, malformed or revoked key is a 401 at once."""

    def authenticate(self, request):
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != KEYWORD.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed(
                "Send the key as “Authorization: Bearer <key>”, with no spaces in the key."
            )
        try:
            raw = header[1].decode()
        except UnicodeError:
            raise exceptions.AuthenticationFailed("The API key contains invalid characters.") from None
        api_key = api_key_for_secret(raw)
        if api_key is None:
            raise exceptions.AuthenticationFailed("Unknown or revoked API key.")
        now = timezone.now()
        if api_key.last_used_at is None or api_key.last_used_at <= now - LAST_USED_RESOLUTION:
            api_key_touch(api_key=api_key, now=now, resolution=LAST_USED_RESOLUTION)
        return ApiKeyPrincipal(api_key), api_key

    def authenticate_header(self, request) -> str:
        return f'{KEYWORD} realm="api"'


# --- Rate limits ----------------------------------------------------------------------------


class _SettingsRateThrottle(SimpleRateThrottle):
    """Reads its rate when asked (not at import), so settings overrides reach it."""

    def get_rate(self) -> str | None:
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)


class ApiKeyRateThrottle(_SettingsRateThrottle):
    """Requests per API key (rate `api_key`, env API_KEY_THROTTLE); other callers pass."""

    scope = "api_key"

    def get_cache_key(self, request, view) -> str | None:
        if not isinstance(request.auth, ApiKey):
            return None
        return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}


class ApiIpRateThrottle(_SettingsRateThrottle):
    """Requests per client address (rate `api_ip`, env API_IP_THROTTLE), whoever sends them."""

    scope = "api_ip"

    def get_cache_key(self, request, view) -> str:
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
