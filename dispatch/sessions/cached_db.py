from django.contrib.sessions.backends import cached_db

from dispatch.sessions import MemberSessionStore


class SessionStore(MemberSessionStore, cached_db.SessionStore):
    pass
