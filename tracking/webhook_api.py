"""REST API of webhook endpoints: /api/v1/webhooks/ (docs/webhooks.md). Thin: the writes are
tracking.webhooks' services; another organisation's endpoint or delivery is a 404."""

from drf_spectacular.utils import extend_schema
from rest_framework import mixins, serializers, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response

from dispatch.api import OrganizationTimezoneMixin
from dispatch.api_auth import request_actor
from dispatch.api_base import IntegrationAPIMixin
from dispatch.permissions import IsPortalUser
from dispatch.selectors import organization_for
from tracking import webhooks
from tracking.models import Notification, WebhookEndpoint


class WebhookEndpointSerializer(serializers.ModelSerializer):
    class Meta:
        model = WebhookEndpoint
        fields = [
            "id", "url", "description", "events", "active", "secret", "previous_secret_until",
            "consecutive_failures", "disabled_reason", "disabled_at", "created_at", "updated_at",
        ]  # fmt: skip
        read_only_fields = fields


class WebhookEndpointInput(serializers.Serializer):
    url = serializers.URLField(max_length=2000)
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=sorted(webhooks.EVENT_TYPES)), required=False, default=list
    )
    description = serializers.CharField(max_length=200, required=False, allow_blank=True, default="")
    active = serializers.BooleanField(required=False, default=True)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    type = serializers.CharField(source="subject")
    request_body = serializers.CharField(source="body")

    class Meta:
        model = Notification
        fields = [
            "id", "webhook_id", "type", "status", "attempts", "created_at", "last_attempt_at", "sent_at",
            "not_before", "response_status", "response_excerpt", "last_error", "attempt_log", "request_body",
        ]  # fmt: skip
        read_only_fields = fields


class ResendInput(serializers.Serializer):
    delivery = serializers.IntegerField(help_text="The id of one of this endpoint's deliveries.")


class WebhookEndpointViewSet(
    IntegrationAPIMixin,
    OrganizationTimezoneMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Your organisation's webhook endpoints. Deliveries are signed per Standard Webhooks with
    the endpoint's secret; see docs/webhooks.md."""

    permission_classes = [IsPortalUser]
    serializer_class = WebhookEndpointSerializer
    # Ids fit a 64-bit column; anything else is the JSON 404 of config.errors, never a query.
    lookup_value_regex = "[0-9]{1,18}"

    def get_queryset(self):
        organization = organization_for(self.request.user)
        return webhooks.endpoints_visible_to(organization=organization).order_by("pk")

    @extend_schema(request=WebhookEndpointInput, responses={201: WebhookEndpointSerializer})
    def create(self, request):
        data = WebhookEndpointInput(data=request.data)
        data.is_valid(raise_exception=True)
        endpoint = webhooks.webhook_endpoint_create(
            organization=organization_for(request.user), by=request_actor(request), **data.validated_data
        )
        return Response(WebhookEndpointSerializer(endpoint).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=WebhookEndpointInput, responses={200: WebhookEndpointSerializer})
    def update(self, request, pk=None):
        partial = request.method == "PATCH"
        data = WebhookEndpointInput(data=request.data, partial=partial)
        data.is_valid(raise_exception=True)
        fields = {
            name: data.validated_data[name]
            for name in data.validated_data
            if name in request.data or not partial
        }
        endpoint = webhooks.webhook_endpoint_update(endpoint=self.get_object(), **fields)
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(request=WebhookEndpointInput, responses={200: WebhookEndpointSerializer})
    def partial_update(self, request, pk=None):
        return self.update(request, pk=pk)

    def destroy(self, request, pk=None):
        webhooks.webhook_endpoint_delete(endpoint=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)

    @extend_schema(request=None, responses={200: WebhookEndpointSerializer})
    @action(detail=True, methods=["post"])
    def rotate(self, request, pk=None):
        """A new secret; the previous one keeps signing for WEBHOOK_ROTATION_GRACE_HOURS."""
        endpoint = webhooks.webhook_endpoint_rotate(endpoint=self.get_object())
        return Response(WebhookEndpointSerializer(endpoint).data)

    @extend_schema(request=None, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def test(self, request, pk=None):
        """Queue a "webhook.test" delivery to this endpoint."""
        delivery = webhooks.webhook_test_send(endpoint=self.get_object())
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(responses={200: WebhookDeliverySerializer(many=True)})
    @action(detail=True, methods=["get"], pagination_class=None)  # a bare list, not a page
    def deliveries(self, request, pk=None):
        """The endpoint's newest 50 deliveries (its delivery log), newest first."""
        rows = webhooks.endpoint_deliveries(endpoint=self.get_object())
        return Response(WebhookDeliverySerializer(rows, many=True).data)

    @extend_schema(request=ResendInput, responses={202: WebhookDeliverySerializer})
    @action(detail=True, methods=["post"])
    def resend(self, request, pk=None):
        """Send one of this endpoint's deliveries again now (same body, same webhook-id)."""
        endpoint = self.get_object()
        data = ResendInput(data=request.data)
        data.is_valid(raise_exception=True)
        delivery = Notification.objects.filter(endpoint=endpoint, pk=data.validated_data["delivery"]).first()
        if delivery is None:
            # A 400 on the field, as for every id sent in a body (dispatch.api._Base._row): the
            # endpoint exists; it is the body that names nothing.
            raise ValidationError({"delivery": ["No such delivery of this endpoint."]})
        delivery = webhooks.webhook_delivery_resend(delivery=delivery)
        return Response(WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
