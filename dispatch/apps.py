from django.apps import AppConfig
from django.db.models.signals import post_delete, post_save


class DispatchConfig(AppConfig):
    name = "dispatch"
    verbose_name = "Dispatch"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model

        from dispatch.auth_backends import forget_on_change
        from dispatch.models import Membership, Organization, UserSession
        from dispatch.sessions import forget_cached_copy

        # A changed or removed account, membership or organisation is not served from the
        # signed-in user cache (dispatch.auth_backends).
        for model in (get_user_model(), Membership, Organization):
            for name, signal in (("saved", post_save), ("deleted", post_delete)):
                uid = f"dispatch.signed_in_user.{model.__name__}.{name}"
                signal.connect(forget_on_change, sender=model, dispatch_uid=uid)
        # A session deleted as a row is not served on from its copy in Redis (dispatch.sessions).
        post_delete.connect(forget_cached_copy, sender=UserSession, dispatch_uid="dispatch.session.deleted")
