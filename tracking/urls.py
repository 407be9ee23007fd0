from django.urls import path

from tracking import views

app_name = "tracking"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("driver/", views.driver_home, name="driver_home"),
]
