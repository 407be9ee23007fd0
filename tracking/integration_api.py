"""Tracking data for integrations (API keys, dispatchers): an order's customer link and what
its tracking page shows. The customer's own JSON stays at /api/v1/track/<token>/ (tracking.api).

It lives in tracking, not dispatch, because dispatch may not import tracking (DESIGN.md).
"""

from django.shortcuts import get_object_or_404
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import serializers
from rest_framework.response import Response
from rest_framework.views import APIView

from dispatch.api import OrganizationTimezoneMixin
from dispatch.api_base import IntegrationAPIMixin
from dispatch.permissions import IsPortalUser
from dispatch.selectors import orders_visible_to
from tracking.links import link_url, tracking_link_ensure
from tracking.selectors import customer_view


class OrderTracking(serializers.Serializer):
    order = serializers.IntegerField()
    url = serializers.URLField(help_text="The customer's tracking page: send it in your own messages.")
    expires_at = serializers.DateTimeField(
        allow_null=True, help_text="Set once the order has ended; until then the link works."
    )
    page = serializers.JSONField(help_text="What the tracking page shows (as GET /api/v1/track/<token>/).")


class OrderTrackingView(IntegrationAPIMixin, OrganizationTimezoneMixin, APIView):
    """GET an order's live tracking link (made if it has none yet) and the tracking page's data:
    status, ETA window, stops before it, proof once delivered. Another organisation's order is
    a 404."""

    permission_classes = [IsPortalUser]

    @extend_schema(responses={200: OrderTracking})
    def get(self, request, pk: str):
        order = get_object_or_404(orders_visible_to(request.user), pk=pk)
        link = tracking_link_ensure(order=order)
        page = customer_view(link=link, now=timezone.now())
        return Response(
            {"order": order.pk, "url": link_url(link), "expires_at": link.expires_at, "page": page}
        )
