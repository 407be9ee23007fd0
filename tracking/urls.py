from django.urls import path

from tracking import driver_views, tracker_views, views

app_name = "tracking"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("alerts/<int:pk>/acknowledge/", views.alert_acknowledge, name="alert_acknowledge"),
    path("driver/", driver_views.driver_home, name="driver_home"),
    path("drivers/<int:driver_id>/trackers/", tracker_views.driver_trackers, name="driver_trackers"),
    path("trackers/<int:pk>/revoke/", tracker_views.driver_tracker_revoke, name="driver_tracker_revoke"),
]
