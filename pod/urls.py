from django.urls import path

from pod import views

app_name = "pod"
urlpatterns = [
    path("pod/photos/<uuid:public_id>/", views.photo, name="photo"),
    path("pod/photos/<uuid:public_id>/small/", views.photo_thumbnail, name="photo_thumbnail"),
    path("pod/signatures/<uuid:public_id>/", views.signature, name="signature"),
    path("orders/<int:pk>/proof/", views.order_proof, name="order_proof"),
]
