"""The sign-in backend of the portal and the driver app's session."""

from django.contrib.auth import get_user_model
from django.contrib.auth.backends import ModelBackend


class MemberBackend(ModelBackend):
    """Django's username and password sign-in, whose per-request user read also loads the
    membership and its organisation: every portal request needs them (the organisation's zone,
    the scope of every query), so one query where Django's backend and ``membership_for`` made
    two. ``membership_for`` then reads what this query loaded.
    """

    def get_user(self, user_id):
        user_model = get_user_model()
        try:
            user = user_model._default_manager.select_related("membership__organization").get(pk=user_id)
        except user_model.DoesNotExist:
            return None
        if not self.user_can_authenticate(user):
            return None
        # A missing membership was loaded as "none" too (the reverse one-to-one raises, no query).
        user._doorstep_membership = getattr(user, "membership", None)
        return user
