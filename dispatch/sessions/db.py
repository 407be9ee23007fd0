from django.contrib.sessions.backends import db

from dispatch.sessions import PlainSessionRead


class SessionStore(PlainSessionRead, db.SessionStore):
    pass
