from django.contrib.sessions.backends import cached_db

from dispatch.sessions import PlainSessionRead


class SessionStore(PlainSessionRead, cached_db.SessionStore):
    pass
