"""Tracking links: the customer's unguessable address for one order (writes, like services).

token = base64url(HMAC-SHA256(SECRET_KEY, salt)), 256 bits; the salt is 32 bytes from
`secrets`. The database keeps the salt and SHA-256(token), never the token: a dump without the
secret key opens no link (TOK-2), while a notification can still render the link when it is
sent. Rotating SECRET_KEY therefore retires every link; re-issue them after a rotation.
"""

import base64
import hashlib
import hmac
import secrets
from datetime import datetime, timedelta

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser
from django.db import IntegrityError, transaction
from django.db.models import Exists, F, OuterRef
from django.db.models.functions import Coalesce
from django.urls import reverse
from django.utils import timezone

from dispatch.models import Order
from tracking.models import TrackingLink, TrackingSettings

# Orders in these states are over: their link keeps working for link_expiry_days, then is gone.
ENDED_STATUSES = (
    Order.Status.DELIVERED,
    Order.Status.PICKED_UP,
    Order.Status.FAILED,
    Order.Status.CANCELLED,
)
TOKEN_LENGTH = 43  # 32 bytes in unpadded base64url


def _token(salt: str) -> str:
    digest = hmac.new(settings.SECRET_KEY.encode(), salt.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def settings_for(organization_id: int) -> TrackingSettings:
    """The organisation's customer settings; one that never set any gets the defaults."""
    return TrackingSettings.objects.filter(organization_id=organization_id).first() or TrackingSettings(
        organization_id=organization_id
    )


def link_token(link: TrackingLink) -> str:
    return _token(link.salt)


def link_path(link: TrackingLink) -> str:
    return reverse("tracking:track", args=[link_token(link)])


def link_url(link: TrackingLink) -> str:
    """The absolute address customers open (SITE_URL + /t/<token>/), rendered at send time."""
    return settings.SITE_URL.rstrip("/") + link_path(link)


def _new(order: Order, now: datetime) -> TrackingLink:
    salt = secrets.token_hex(32)
    expires = None
    if order.status in ENDED_STATUSES:
        expires = now + timedelta(days=settings_for(order.organization_id).link_expiry_days)
    return TrackingLink.objects.create(
        organization_id=order.organization_id,
        order=order,
        salt=salt,
        token_hash=_hash(_token(salt)),
        created_at=now,
        expires_at=expires,
    )


def tracking_link_ensure(*, order: Order, now: datetime | None = None) -> TrackingLink:
    """The order's live link, made if it has none. Safe when two callers race (one wins the
    partial unique constraint; the other reads its row)."""
    live = TrackingLink.objects.filter(order=order, revoked_at=None).first()
    if live is not None:
        return live
    try:
        with transaction.atomic():
            return _new(order, now or timezone.now())
    except IntegrityError:
        return TrackingLink.objects.get(order=order, revoked_at=None)


@transaction.atomic
def tracking_link_reissue(
    *, order: Order, by: AbstractBaseUser | None = None, now: datetime | None = None
) -> TrackingLink:
    """Revoke the order's live link (it stops working at once) and issue a new one."""
    now = now or timezone.now()
    list(Order.objects.select_for_update().filter(pk=order.pk))  # one re-issue at a time per order
    TrackingLink.objects.filter(order=order, revoked_at=None).update(revoked_at=now)
    return _new(order, now)


def tracking_link_revoke(*, link: TrackingLink, now: datetime | None = None) -> TrackingLink:
    TrackingLink.objects.filter(pk=link.pk, revoked_at=None).update(revoked_at=now or timezone.now())
    link.refresh_from_db()
    return link


def token_hash(token: str) -> str | None:
    """What the database keeps of a well-formed token (None for one that cannot be a token)."""
    if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
        return None
    return _hash(token)


def tracking_link_lookup(token: str, *, now: datetime | None = None) -> tuple[TrackingLink | None, str]:
    """(link, "ok" | "expired") for a working or expired link; (None, "unknown") for a token
    that is malformed, never issued or revoked — those all look the same from outside."""
    if not isinstance(token, str) or len(token) != TOKEN_LENGTH:
        return None, "unknown"
    link = (
        TrackingLink.objects.select_related("order__organization")
        .filter(token_hash=_hash(token), revoked_at=None)
        .first()
    )
    if link is None:
        return None, "unknown"
    now = now or timezone.now()
    if link.expires_at is not None and link.expires_at <= now:
        return link, "expired"
    return link, "ok"


def tracking_link_seen(*, link: TrackingLink, now: datetime | None = None) -> None:
    """Count a view: one UPDATE, no read-modify-write."""
    now = now or timezone.now()
    TrackingLink.objects.filter(pk=link.pk).update(
        views=F("views") + 1, first_seen_at=Coalesce("first_seen_at", now), last_seen_at=now
    )


def tracking_link_still_open(
    *, link_id: int, last_seen_at: datetime | None, now: datetime | None = None
) -> None:
    """An open page polled: not a new view, but the customer is still looking. last_seen_at is
    moved at most once a minute, so 2,000 open pages do not write 133 times a second."""
    now = now or timezone.now()
    if last_seen_at is None or now - last_seen_at >= timedelta(minutes=1):
        TrackingLink.objects.filter(pk=link_id).update(last_seen_at=now)


def tracking_link_order_changed(*, order_id: int, now: datetime | None = None) -> None:
    """Keep the live link in step with its order: made with the order, its expiry set when the
    order ends, cleared when a failed order is sent out again."""
    order = Order.objects.filter(pk=order_id).first()
    if order is None:
        return
    now = now or timezone.now()
    link = tracking_link_ensure(order=order, now=now)
    if order.status in ENDED_STATUSES:
        if link.expires_at is None:
            expires = now + timedelta(days=settings_for(order.organization_id).link_expiry_days)
            TrackingLink.objects.filter(pk=link.pk, expires_at=None).update(expires_at=expires)
    elif link.expires_at is not None:
        TrackingLink.objects.filter(pk=link.pk).update(expires_at=None)


def tracking_links_sweep(*, now: datetime | None = None, limit: int = 5000) -> int:
    """Give every open order created in the last days a link if a signal was missed."""
    now = now or timezone.now()
    missing = (
        Order.objects.filter(created_at__gte=now - timedelta(days=3))
        .exclude(status__in=ENDED_STATUSES)
        .filter(~Exists(TrackingLink.objects.filter(order=OuterRef("pk"), revoked_at=None)))
        .order_by("pk")[:limit]
    )
    made = 0
    for order in missing:
        tracking_link_ensure(order=order, now=now)
        made += 1
    return made
