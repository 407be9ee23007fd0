"""REST API for the core domain. Writes go through dispatch.services."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import transaction
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from dispatch import services
from dispatch.models import Order
from dispatch.permissions import IsPortalUser
from dispatch.selectors import (
    depots_visible_to,
    drivers_visible_to,
    membership_for,
    orders_visible_to,
    plans_visible_to,
)
from dispatch.serializers import (
    BulkResult,
    OrderCancelInput,
    OrderInput,
    OrderSerializer,
    PlanInput,
    PlanSerializer,
)

MAX_BULK = 500


def exception_handler(exc, context):
    """Domain errors become 400/409 with a message a person can act on."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": exc.messages}
        return Response(detail, status=status.HTTP_400_BAD_REQUEST)
    if isinstance(exc, services.IllegalTransition | services.StaleEdit):
        return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
    return drf_exception_handler(exc, context)


class OrganizationTimezoneMixin:
    """Token-authenticated requests are only known to DRF: read naive times in the org's zone."""

    def initial(self, request, *args, **kwargs):
        super().initial(request, *args, **kwargs)
        membership = membership_for(request.user)
        if membership is not None:
            timezone.activate(membership.organization.tzinfo)


class OrderFilter(filters.FilterSet):
    service_date = filters.DateFilter()
    status = filters.ChoiceFilter(choices=Order.Status.choices)
    external_ref = filters.CharFilter()

    class Meta:
        model = Order
        fields = ["service_date", "status", "external_ref", "kind"]


class OrderViewSet(
    OrganizationTimezoneMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Orders of your organisation. Another organisation's order is a 404."""

    serializer_class = OrderSerializer
    permission_classes = [IsPortalUser]
    filterset_class = OrderFilter

    def get_queryset(self):
        return orders_visible_to(self.request.user).order_by("service_date", "pk")

    def _fields(self, data: dict) -> dict:
        """Turn ids into rows of the caller's organisation (unknown or foreign id → 400)."""
        fields = {k: v for k, v in data.items() if k != "version"}
        lookups = {"depot": depots_visible_to, "required_driver": drivers_visible_to}
        for name, visible in lookups.items():
            if fields.get(name) is not None:
                row = visible(self.request.user).filter(pk=fields[name]).first()
                if row is None:
                    raise ValidationError(
                        {name: f"No {name.replace('_', ' ')} with id {fields[name]} in your organisation."}
                    )
                fields[name] = row
        return fields

    @extend_schema(request=OrderInput, responses={201: OrderSerializer})
    def create(self, request):
        data = OrderInput(data=request.data)
        data.is_valid(raise_exception=True)
        order = services.order_create(
            organization=membership_for(request.user).organization,
            by=request.user,
            **self._fields(data.validated_data),
        )
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=OrderInput, responses={200: OrderSerializer})
    def partial_update(self, request, pk=None):
        order = self.get_object()
        data = OrderInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        order = services.order_update(
            order=order,
            by=request.user,
            expected_version=data.validated_data.get("version"),
            **self._fields(data.validated_data),
        )
        return Response(OrderSerializer(order).data)

    @extend_schema(request=OrderCancelInput, responses={200: OrderSerializer})
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        order = self.get_object()
        data = OrderCancelInput(data=request.data)
        data.is_valid(raise_exception=True)
        order = services.order_cancel(
            order=order, by=request.user, reason=data.validated_data.get("reason", "")
        )
        return Response(OrderSerializer(order).data)

    @extend_schema(request=OrderInput(many=True), responses={201: BulkResult})
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        """Create up to 500 orders at once: all of them, or none with every bad item listed."""
        if not isinstance(request.data, list) or not request.data:
            raise ValidationError({"detail": "Send a JSON array of orders."})
        if len(request.data) > MAX_BULK:
            raise ValidationError({"detail": f"At most {MAX_BULK} orders per request; split the batch."})
        data = OrderInput(data=request.data, many=True)
        if not data.is_valid():
            # Keyed by the item's index in the array, so the sender can find each bad one.
            items = data.errors.items() if isinstance(data.errors, dict) else enumerate(data.errors)
            raise ValidationError({str(index): error for index, error in items if error})
        with transaction.atomic():
            rows = [self._fields(item) for item in data.validated_data]
            orders = services.orders_create_many(
                organization=membership_for(request.user).organization, by=request.user, rows=rows
            )
        return Response(
            {"created": len(orders), "orders": OrderSerializer(orders, many=True).data},
            status=status.HTTP_201_CREATED,
        )


class PlanViewSet(
    OrganizationTimezoneMixin,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Optimisation runs. POST starts one (202 with its id); GET it for progress and result."""

    serializer_class = PlanSerializer
    permission_classes = [IsPortalUser]

    def get_queryset(self):
        return plans_visible_to(self.request.user).defer("problem").order_by("-created_at")

    @extend_schema(request=PlanInput, responses={202: PlanSerializer})
    def create(self, request):
        from dispatch.planning import plan_create

        data = PlanInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        depot = depots_visible_to(request.user).filter(pk=values["depot"]).first()
        if depot is None:
            raise ValidationError({"depot": f"No depot with id {values['depot']} in your organisation."})
        plan = plan_create(
            organization=membership_for(request.user).organization,
            by=request.user,
            day=values["date"],
            depot=depot,
            driver_ids=values.get("drivers"),
            order_ids=values.get("orders"),
            objective=values["objective"],
            time_budget_seconds=values["time_budget_seconds"],
            balance=values["balance"],
        )
        return Response(PlanSerializer(plan).data, status=status.HTTP_202_ACCEPTED)
