from django.urls import path

from tracking import driver_views, link_views, public_views, tracker_views, views

app_name = "tracking"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("alerts/<int:pk>/acknowledge/", views.alert_acknowledge, name="alert_acknowledge"),
    path("driver/", driver_views.driver_home, name="driver_home"),
    path("orders/<int:pk>/tracking-link/", link_views.order_tracking_link, name="order_tracking_link"),
    path("t/<str:token>/", public_views.track, name="track"),
    path("t/<str:token>/photos/<uuid:public_id>/", public_views.track_photo, name="track_photo"),
    path(
        "t/<str:token>/photos/<uuid:public_id>/small/",
        public_views.track_photo,
        {"small": True},
        name="track_photo_small",
    ),
    path("t/<str:token>/signature/", public_views.track_signature, name="track_signature"),
    path("t/<str:token>/logo/", public_views.track_logo, name="track_logo"),
    path("drivers/<int:driver_id>/trackers/", tracker_views.driver_trackers, name="driver_trackers"),
    path("trackers/<int:pk>/revoke/", tracker_views.driver_tracker_revoke, name="driver_tracker_revoke"),
]
