from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView
from rest_framework.authtoken.views import ObtainAuthToken
from rest_framework.routers import DefaultRouter
from rest_framework.throttling import AnonRateThrottle

from config.health import healthz
from dispatch import api as dispatch_api


class AuthTokenThrottle(AnonRateThrottle):
    scope = "auth"


router = DefaultRouter()
router.register("orders", dispatch_api.OrderViewSet, basename="order")

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path(
        "api/v1/auth/token/",
        ObtainAuthToken.as_view(throttle_classes=[AuthTokenThrottle]),
        name="api_token",
    ),
    path("api/v1/", include(router.urls)),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="schema"), name="api_docs"),
    path("", include("tracking.urls")),
    path("", include("dispatch.urls")),
]
