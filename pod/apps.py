from django.apps import AppConfig


class PodConfig(AppConfig):
    name = "pod"
    verbose_name = "Proof of delivery"
