from django.urls import path

from tracking import driver_views, views

app_name = "tracking"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("driver/", driver_views.driver_home, name="driver_home"),
]
