"""REST API for the core domain. Writes go through dispatch.services."""

import datetime as dt

from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import IntegrityError, transaction
from django.db.models import Prefetch
from django.utils import timezone
from django_filters import rest_framework as filters
from drf_spectacular.utils import extend_schema
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

from dispatch import planning, services
from dispatch.api_auth import request_actor
from dispatch.api_base import ErrorSerializer, IntegrationAPIMixin, StableOrderingFilter
from dispatch.models import Driver, Order, Route, Shift, Stop, StopEvent
from dispatch.permissions import IsPortalUser
from dispatch.selectors import (
    contacts_visible_to,
    depots_visible_to,
    drivers_visible_to,
    membership_for,
    orders_visible_to,
    plans_visible_to,
    routes_visible_to,
    shifts_visible_to,
    vehicles_visible_to,
)
from dispatch.serializers import (
    BulkErrors,
    BulkResult,
    ContactInput,
    ContactSerializer,
    DepotInput,
    DepotSerializer,
    DriverSerializer,
    OrderCancelInput,
    OrderEventSerializer,
    OrderInput,
    OrderSerializer,
    PlanInput,
    PlanPublishResult,
    PlanSerializer,
    RouteSerializer,
    ShiftInput,
    ShiftSerializer,
)

MAX_BULK = 1000


def exception_handler(exc, context):
    """Domain errors become 400/409 with a message a person can act on."""
    if isinstance(exc, DjangoValidationError):
        detail = exc.message_dict if hasattr(exc, "error_dict") else {"detail": " ".join(exc.messages)}
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


class _Base(IntegrationAPIMixin, OrganizationTimezoneMixin):
    """Admins, dispatchers and API keys of one organisation; another's rows are a 404."""

    permission_classes = [IsPortalUser]
    filter_backends = [filters.DjangoFilterBackend, StableOrderingFilter]
    # Ids fit a 64-bit column: a longer number is a 404, not a database overflow (a 500).
    lookup_value_regex = "[0-9]{1,18}"

    @property
    def organization(self):
        return membership_for(self.request.user).organization

    def _row(self, visible, name: str, pk):
        """A row of the caller's organisation by id (unknown or another's → 400 on `name`)."""
        row = visible(self.request.user).filter(pk=pk).first()
        if row is None:
            raise ValidationError({name: f"No {name.replace('_', ' ')} with id {pk} in your organisation."})
        return row


# --- Orders ---------------------------------------------------------------------------------


class BoundedIsoDateTimeFilter(filters.IsoDateTimeFilter):
    """An ISO 8601 instant between the years 1970 and 2200 with a real-world offset (at most
    14 hours): PostgreSQL refuses larger offsets with an error that would end the request."""

    def filter(self, qs, value):
        if value is not None:
            offset = value.utcoffset()
            if not 1970 <= value.year <= 2200:
                raise ValidationError({self.field_name: "Give a time between the years 1970 and 2200."})
            if offset is not None and abs(offset) > dt.timedelta(hours=14):
                raise ValidationError({self.field_name: "Give a UTC offset between -14:00 and +14:00."})
        return super().filter(qs, value)


class OrderFilter(filters.FilterSet):
    service_date = filters.DateFilter()
    service_date_from = filters.DateFilter(field_name="service_date", lookup_expr="gte")
    service_date_to = filters.DateFilter(field_name="service_date", lookup_expr="lte")
    status = filters.ChoiceFilter(choices=Order.Status.choices)
    external_ref = filters.CharFilter()
    updated_since = BoundedIsoDateTimeFilter(
        field_name="updated_at", lookup_expr="gte", help_text="Orders changed at or after this instant."
    )

    class Meta:
        model = Order
        fields = ["service_date", "status", "external_ref", "kind"]


def _bulk_item_errors(index: int, detail) -> list[dict]:
    """DRF's error detail of one item as [{index, field, messages}] (nested fields dotted)."""
    if not isinstance(detail, dict):
        return [{"index": index, "field": "non_field_errors", "messages": [str(m) for m in detail]}]
    rows = []
    for field, messages in detail.items():
        if isinstance(messages, dict):
            for sub, inner in messages.items():
                flat = inner if isinstance(inner, list) else [inner]
                rows.append({"index": index, "field": f"{field}.{sub}", "messages": [str(m) for m in flat]})
        else:
            flat = messages if isinstance(messages, list) else [messages]
            rows.append({"index": index, "field": field, "messages": [str(m) for m in flat]})
    return rows


class OrderViewSet(
    _Base,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Orders of your organisation. Another organisation's order is a 404."""

    serializer_class = OrderSerializer
    filterset_class = OrderFilter
    ordering_fields = ["service_date", "window_start", "created_at", "updated_at", "external_ref"]
    ordering = ["service_date", "pk"]

    def get_queryset(self):
        return orders_visible_to(self.request.user).order_by("service_date", "pk")

    def _fields(self, data: dict) -> dict:
        """Turn ids into rows of the caller's organisation (unknown or foreign id → 400)."""
        fields = {k: v for k, v in data.items() if k != "version"}
        lookups = {"depot": depots_visible_to, "required_driver": drivers_visible_to}
        for name, visible in lookups.items():
            if fields.get(name) is not None:
                fields[name] = self._row(visible, name, fields[name])
        return fields

    @extend_schema(request=OrderInput, responses={201: OrderSerializer})
    def create(self, request):
        data = OrderInput(data=request.data)
        data.is_valid(raise_exception=True)
        order = services.order_create(
            organization=self.organization, by=request_actor(request), **self._fields(data.validated_data)
        )
        return Response(OrderSerializer(order).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=OrderInput, responses={200: OrderSerializer})
    def partial_update(self, request, pk=None):
        order = self.get_object()
        data = OrderInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        order = services.order_update(
            order=order,
            by=request_actor(request),
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
            order=order, by=request_actor(request), reason=data.validated_data.get("reason", "")
        )
        return Response(OrderSerializer(order).data)

    @extend_schema(responses={200: OrderEventSerializer(many=True)}, filters=False)
    @action(detail=True, methods=["get"], pagination_class=None, filter_backends=[])
    def events(self, request, pk=None):
        """The order's history, oldest first: created, planned, out for delivery, arrived,
        delivered or failed (with the reason)…"""
        order = self.get_object()
        events = StopEvent.objects.filter(order=order).order_by("at", "pk")
        return Response(OrderEventSerializer(events, many=True).data)

    @extend_schema(
        request=OrderInput(many=True),
        responses={201: BulkResult, 400: BulkErrors},
        description=f"Create up to {MAX_BULK} orders at once: all of them, or none and a 400 listing "
        "every bad item by its 0-based `index` and `field`.",
    )
    @action(detail=False, methods=["post"])
    def bulk(self, request):
        if not isinstance(request.data, list) or not request.data:
            raise ValidationError({"detail": "Send a JSON array of orders.", "errors": []})
        if len(request.data) > MAX_BULK:
            raise ValidationError(
                {"detail": f"At most {MAX_BULK} orders per request; split the batch.", "errors": []}
            )
        errors: list[dict] = []
        rows: list[tuple[int, dict]] = []
        for index, item in enumerate(request.data):
            data = OrderInput(data=item)
            if not data.is_valid():
                errors += _bulk_item_errors(index, data.errors)
                continue
            try:
                rows.append((index, self._fields(data.validated_data)))
            except ValidationError as exc:
                errors += _bulk_item_errors(index, exc.detail)
        with transaction.atomic():  # checked and created together, or not at all
            errors += [
                {"index": index, "field": field, "messages": messages}
                for index, field, messages in services.orders_check_many(
                    organization=self.organization, rows=rows
                )
            ]
            if not errors:
                try:
                    with transaction.atomic():
                        orders = services.orders_create_many(
                            organization=self.organization,
                            by=request_actor(request),
                            rows=[r for _, r in rows],
                            prechecked=True,
                        )
                except IntegrityError as exc:  # a parallel request took an external reference
                    raise ValidationError(
                        {"detail": "Another request created an order with one of these external "
                         "references at the same moment; nothing was created. Send the batch again.",
                         "errors": []}
                    ) from exc  # fmt: skip
        if errors:
            errors.sort(key=lambda e: e["index"])
            # A Response, not ValidationError: that would turn the indexes into strings.
            return Response(
                {"detail": f"{len({e['index'] for e in errors})} order(s) are invalid; none was created.",
                 "errors": errors},
                status=status.HTTP_400_BAD_REQUEST,
            )  # fmt: skip
        return Response(
            {"created": len(orders), "orders": OrderSerializer(orders, many=True).data},
            status=status.HTTP_201_CREATED,
        )


# --- Routes and plans -------------------------------------------------------------------------


def _id_filter(field_name: str) -> filters.NumberFilter:
    """An id in a query string: a whole number that fits the column (else a 400, not a 500)."""
    return filters.NumberFilter(field_name=field_name, min_value=1, max_value=2**63 - 1, decimal_places=0)


class RouteFilter(filters.FilterSet):
    date = filters.DateFilter()
    status = filters.ChoiceFilter(choices=Route.Status.choices)
    driver = _id_filter("driver_id")

    class Meta:
        model = Route
        fields = ["date", "status", "driver"]


class RouteViewSet(_Base, viewsets.ReadOnlyModelViewSet):
    """Routes with their stops in visiting order. Change them in the portal or by re-planning."""

    serializer_class = RouteSerializer
    filterset_class = RouteFilter
    ordering_fields = ["date", "status", "planned_start"]
    ordering = ["date", "pk"]

    def get_queryset(self):
        stops = Stop.objects.select_related("order").order_by("sequence", "pk")
        return routes_visible_to(self.request.user).prefetch_related(Prefetch("stops", queryset=stops))


class PlanViewSet(
    _Base,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    viewsets.GenericViewSet,
):
    """Optimisation runs. POST starts one (202 with its id); GET it for progress and result;
    POST …/publish/ once it succeeded to give its routes to the drivers."""

    serializer_class = PlanSerializer
    filter_backends = [StableOrderingFilter]
    ordering_fields = ["created_at", "date"]
    ordering = ["-created_at", "-pk"]

    def get_queryset(self):
        return plans_visible_to(self.request.user).defer("problem").order_by("-created_at", "-pk")

    @extend_schema(request=PlanInput, responses={202: PlanSerializer})
    def create(self, request):
        data = PlanInput(data=request.data)
        data.is_valid(raise_exception=True)
        values = data.validated_data
        depot = self._row(depots_visible_to, "depot", values["depot"])
        plan = planning.plan_create(
            organization=self.organization,
            by=request_actor(request),
            day=values["date"],
            depot=depot,
            driver_ids=values.get("drivers"),
            order_ids=values.get("orders"),
            objective=values["objective"],
            time_budget_seconds=values["time_budget_seconds"],
            balance=values["balance"],
        )
        return Response(PlanSerializer(plan).data, status=status.HTTP_202_ACCEPTED)

    @extend_schema(request=None, responses={200: PlanPublishResult, 400: ErrorSerializer})
    @action(detail=True, methods=["post"])
    def publish(self, request, pk=None):
        """Publish a succeeded plan's draft routes: their orders become assigned and the drivers
        see them. 400 if the plan has not finished or a driver already has a published route."""
        routes = planning.plan_publish(plan=self.get_object(), by=request_actor(request))
        return Response({"published": [route.pk for route in routes]})


# --- Fleet and address book -------------------------------------------------------------------


class DriverFilter(filters.FilterSet):
    depot = _id_filter("depot_id")

    class Meta:
        model = Driver
        fields = ["is_active", "depot"]


class DriverViewSet(_Base, viewsets.ReadOnlyModelViewSet):
    """Your drivers (add them in the portal: a driver is also a login)."""

    serializer_class = DriverSerializer
    filterset_class = DriverFilter
    ordering_fields = ["id"]
    ordering = ["pk"]

    def get_queryset(self):
        return drivers_visible_to(self.request.user).order_by("pk")


class DepotViewSet(
    _Base,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    serializer_class = DepotSerializer
    filterset_fields = ["is_active"]
    ordering_fields = ["name"]
    ordering = ["name", "pk"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return depots_visible_to(self.request.user).order_by("name", "pk")

    @extend_schema(request=DepotInput, responses={201: DepotSerializer})
    def create(self, request):
        data = DepotInput(data=request.data)
        data.is_valid(raise_exception=True)
        depot = services.depot_create(organization=self.organization, **data.validated_data)
        return Response(DepotSerializer(depot).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=DepotInput, responses={200: DepotSerializer})
    def partial_update(self, request, pk=None):
        depot = self.get_object()
        data = DepotInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        depot = services.depot_update(depot=depot, **data.validated_data)
        return Response(DepotSerializer(depot).data)


class ContactViewSet(
    _Base,
    mixins.ListModelMixin,
    mixins.RetrieveModelMixin,
    mixins.CreateModelMixin,
    mixins.UpdateModelMixin,
    viewsets.GenericViewSet,
):
    """The address book."""

    serializer_class = ContactSerializer
    filterset_fields = ["email", "phone"]
    ordering_fields = ["name", "created_at", "updated_at"]
    ordering = ["name", "pk"]
    http_method_names = ["get", "post", "patch", "head", "options"]

    def get_queryset(self):
        return contacts_visible_to(self.request.user).order_by("name", "pk")

    @extend_schema(request=ContactInput, responses={201: ContactSerializer})
    def create(self, request):
        data = ContactInput(data=request.data)
        data.is_valid(raise_exception=True)
        contact = services.contact_create(organization=self.organization, **data.validated_data)
        return Response(ContactSerializer(contact).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ContactInput, responses={200: ContactSerializer})
    def partial_update(self, request, pk=None):
        contact = self.get_object()
        data = ContactInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        contact = services.contact_update(contact=contact, **data.validated_data)
        return Response(ContactSerializer(contact).data)


class ShiftFilter(filters.FilterSet):
    date = filters.DateFilter()
    driver = _id_filter("driver_id")

    class Meta:
        model = Shift
        fields = ["date", "driver"]


class ShiftViewSet(_Base, viewsets.ModelViewSet):
    """Drivers' availability, one shift per driver and day; planning uses them."""

    serializer_class = ShiftSerializer
    filterset_class = ShiftFilter
    ordering_fields = ["date", "starts_at"]
    ordering = ["date", "starts_at", "pk"]
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]

    def get_queryset(self):
        return shifts_visible_to(self.request.user).order_by("date", "starts_at", "pk")

    def _fields(self, data: dict) -> dict:
        fields = dict(data)
        if "driver" in fields:
            fields["driver"] = self._row(drivers_visible_to, "driver", fields["driver"])
        if fields.get("vehicle") is not None:
            fields["vehicle"] = self._row(vehicles_visible_to, "vehicle", fields["vehicle"])
        return fields

    @extend_schema(request=ShiftInput, responses={201: ShiftSerializer})
    def create(self, request):
        data = ShiftInput(data=request.data)
        data.is_valid(raise_exception=True)
        fields = self._fields(data.validated_data)
        shift = services.shift_create(driver=fields.pop("driver"), **fields)
        return Response(ShiftSerializer(shift).data, status=status.HTTP_201_CREATED)

    @extend_schema(request=ShiftInput, responses={200: ShiftSerializer})
    def partial_update(self, request, pk=None):
        shift = self.get_object()
        data = ShiftInput(data=request.data, partial=True)
        data.is_valid(raise_exception=True)
        shift = services.shift_update(shift=shift, **self._fields(data.validated_data))
        return Response(ShiftSerializer(shift).data)

    def destroy(self, request, pk=None):
        services.shift_delete(shift=self.get_object())
        return Response(status=status.HTTP_204_NO_CONTENT)
