from django.urls import path

from tracking import (
    customer_views,
    driver_views,
    link_views,
    notification_views,
    public_views,
    tracker_views,
    views,
    webhook_views,
)

app_name = "tracking"
urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("live/map.json", views.dashboard_map_json, name="dashboard_map"),
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
    # The customer's self-service (tracking.customer_views) and the dispatcher's answers.
    path("t/<str:token>/instructions/", customer_views.customer_instructions, name="customer_instructions"),
    path("t/<str:token>/window/", customer_views.customer_window, name="customer_window"),
    path("t/<str:token>/message/", customer_views.customer_message, name="customer_message"),
    path("t/<str:token>/rating/", customer_views.customer_rating, name="customer_rating"),
    path("orders/<int:pk>/requests/", customer_views.order_requests, name="order_requests"),
    path("requests/<int:pk>/decide/", customer_views.customer_request_decide, name="customer_request_decide"),
    # Customer messages (tracking.notifications): opt-out link, STOP replies, the order's log.
    path("t/<str:token>/unsubscribe/", notification_views.unsubscribe, name="unsubscribe"),
    path("notifications/sms/inbound/", notification_views.sms_inbound, name="sms_inbound"),
    path("orders/<int:pk>/messages/", notification_views.order_messages, name="order_messages"),
    # Webhook endpoints and their delivery logs (tracking.webhooks, docs/webhooks.md).
    path("webhooks/", webhook_views.webhook_list, name="webhook_list"),
    path("webhooks/settings/", webhook_views.webhook_settings, name="webhook_settings"),
    path("webhooks/<int:pk>/", webhook_views.webhook_detail, name="webhook_detail"),
    path("webhooks/<int:pk>/delete/", webhook_views.webhook_delete, name="webhook_delete"),
    path("webhooks/<int:pk>/rotate/", webhook_views.webhook_rotate, name="webhook_rotate"),
    path("webhooks/<int:pk>/test/", webhook_views.webhook_test, name="webhook_test"),
    path("webhooks/deliveries/<int:pk>/", webhook_views.webhook_delivery, name="webhook_delivery"),
    path("webhooks/deliveries/<int:pk>/resend/", webhook_views.webhook_resend, name="webhook_resend"),
    path("drivers/<int:driver_id>/trackers/", tracker_views.driver_trackers, name="driver_trackers"),
    path("trackers/<int:pk>/revoke/", tracker_views.driver_tracker_revoke, name="driver_tracker_revoke"),
]
