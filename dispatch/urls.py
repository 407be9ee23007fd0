from django.urls import path

from dispatch import import_views, views

app_name = "dispatch"
urlpatterns = [
    path("orders/", views.order_list, name="order_list"),
    path("orders/new/", views.order_create, name="order_create"),
    path("orders/import/", import_views.order_import, name="order_import"),
    path("orders/<int:pk>/", views.order_detail, name="order_detail"),
    path("orders/<int:pk>/edit/", views.order_edit, name="order_edit"),
    path("orders/<int:pk>/cancel/", views.order_cancel, name="order_cancel"),
    path("contacts/", views.contact_list, name="contact_list"),
    path("contacts/new/", views.contact_create, name="contact_create"),
    path("contacts/<int:pk>/edit/", views.contact_edit, name="contact_edit"),
    path("drivers/", views.driver_list, name="driver_list"),
    path("drivers/new/", views.driver_create, name="driver_create"),
    path("drivers/<int:pk>/", views.driver_edit, name="driver_edit"),
    path("drivers/<int:pk>/shifts/new/", views.shift_create, name="shift_create"),
    path("shifts/<int:pk>/edit/", views.shift_edit, name="shift_edit"),
    path("shifts/<int:pk>/delete/", views.shift_delete, name="shift_delete"),
    path("vehicles/", views.vehicle_list, name="vehicle_list"),
    path("vehicles/new/", views.vehicle_create, name="vehicle_create"),
    path("vehicles/<int:pk>/edit/", views.vehicle_edit, name="vehicle_edit"),
    path("depots/", views.depot_list, name="depot_list"),
    path("depots/new/", views.depot_create, name="depot_create"),
    path("depots/<int:pk>/edit/", views.depot_edit, name="depot_edit"),
    path("plans/", views.plan_list, name="plan_list"),
    path("plans/<int:pk>/", views.plan_detail, name="plan_detail"),
    path("routes/<int:pk>/", views.route_detail, name="route_detail"),
    path("reports/", views.report_list, name="report_list"),
]
