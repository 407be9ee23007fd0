from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.routers import DefaultRouter
from rest_framework.throttling import AnonRateThrottle

from config.errors import not_found
from config.health import healthz
from dispatch import api as dispatch_api
from tracking import api as tracking_api
from tracking import integration_api as tracking_integration_api
from tracking import webhook_api


class AuthTokenThrottle(AnonRateThrottle):
    scope = "auth"


class AuthTokenView(ObtainAuthToken):
    """POST username + password → {"token": …}. Failures count towards the django-axes lockout."""

    throttle_classes = [AuthTokenThrottle]

    def post(self, request, *args, **kwargs):
        try:
            return super().post(request, *args, **kwargs)
        except ValidationError:
            # axes flags the request but its middleware never sees DRF's response: say it here,
            # or a driver with the right password hunts for a typo.
            if getattr(request, "axes_locked_out", False):
                return Response(
                    {
                        "detail": "Too many failed log-ins: this account is locked from your address "
                        "for a while. Wait and try again, or ask your admin to unlock it."
                    },
                    status=429,
                )
            raise


router = DefaultRouter()
router.register("orders", dispatch_api.OrderViewSet, basename="order")
router.register("plans", dispatch_api.PlanViewSet, basename="plan")
router.register("routes", dispatch_api.RouteViewSet, basename="route")
router.register("drivers", dispatch_api.DriverViewSet, basename="driver")
router.register("shifts", dispatch_api.ShiftViewSet, basename="shift")
router.register("depots", dispatch_api.DepotViewSet, basename="depot")
router.register("contacts", dispatch_api.ContactViewSet, basename="contact")
router.register("webhooks", webhook_api.WebhookEndpointViewSet, basename="webhook")

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path(
        "api/v1/auth/token/",
        AuthTokenView.as_view(),
        name="api_token",
    ),
    path("api/v1/driver/locations/", tracking_api.DriverLocationsView.as_view(), name="driver_locations"),
    path("api/v1/driver/route/", tracking_api.DriverRouteView.as_view(), name="driver_route"),
    path(
        "api/v1/driver/routes/<int:route_id>/events/",
        tracking_api.DriverRouteEventsView.as_view(),
        name="driver_route_events",
    ),
    path(
        "api/v1/driver/stops/<int:stop_id>/events/",
        tracking_api.DriverStopEventsView.as_view(),
        name="driver_stop_events",
    ),
    path(
        "api/v1/driver/stops/<int:stop_id>/pod/",
        tracking_api.DriverStopProofView.as_view(),
        name="driver_stop_pod",
    ),
    # Tracker apps (Traccar Client…) send the OsmAnd protocol here; the device key is the credential.
    path("api/v1/tracker/osmand/", tracking_api.TrackerOsmAndView.as_view(), name="tracker_osmand"),
    path("api/v1/track/<str:token>/", tracking_api.TrackView.as_view(), name="api_track"),
    re_path(  # ids fit a 64-bit column: a longer number is a 404, not a database overflow
        r"^api/v1/orders/(?P<pk>[0-9]{1,18})/tracking/$",
        tracking_integration_api.OrderTrackingView.as_view(),
        name="order_tracking",
    ),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api_docs"),
    path("", include("pod.urls")),
    path("", include("tracking.urls")),
    path("", include("dispatch.urls")),
]

handler404 = not_found
