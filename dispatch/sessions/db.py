from django.contrib.sessions.backends import db

from dispatch.sessions import MemberSessionStore


class SessionStore(MemberSessionStore, db.SessionStore):
    pass
