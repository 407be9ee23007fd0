"""Doorstep settings: one file, everything that differs between environments comes from env vars.

With nothing set, the embedded default runs: SQLite (WAL), django-q2's ORM broker, local-memory
cache, files under media/, e-mail to the console. See .env.example and docs/configuration.md.
"""

from datetime import timedelta
from pathlib import Path

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")  # optional; real env vars win

DEBUG = env.bool("DEBUG", default=False)
SECRET_KEY = env("SECRET_KEY", default="django-insecure-dev-only-set-SECRET_KEY-in-production")
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["localhost", "127.0.0.1", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.humanize",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_filters",
    "django_htmx",
    "template_partials",
    "django_q",
    "axes",
    "csp",
    "dispatch",
    "pod",
    "tracking",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # Django's, finding the user with the row read with the session (dispatch/sessions).
    "dispatch.middleware.MemberAuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "csp.middleware.CSPMiddleware",
    "django_permissions_policy.PermissionsPolicyMiddleware",
    "dispatch.middleware.OrganizationTimezoneMiddleware",
    # axes must come last: it turns a locked-out login into its lockout response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"
ASGI_APPLICATION = "config.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        # APP_DIRS only for admin, DRF and drf-spectacular; our templates live in templates/.
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "csp.context_processors.nonce",
                "dispatch.context_processors.portal",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------------------
DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers proceed during a write; IMMEDIATE takes the write lock at BEGIN so two
    # writers queue on the busy timeout instead of failing with "database is locked" mid-way.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    # A file, not memory: browser tests run a real qcluster process against the test database.
    DATABASES["default"]["TEST"] = {"NAME": env("TEST_DB_NAME", default=str(BASE_DIR / ".test-db.sqlite3"))}
# SQLite too: opening its connection (the PRAGMAs, Django's functions registered on it) cost a
# signed-in request more than a millisecond, three times a PostgreSQL session read.
DATABASES["default"].setdefault("CONN_MAX_AGE", env.int("CONN_MAX_AGE", default=60))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # Django's, whose health check skips its SELECT 1 while the socket is quiet (a closed
    # connection always has the server's goodbye to read): config/postgresql/base.py.
    DATABASES["default"]["ENGINE"] = "config.postgresql"
if DATABASES["default"]["ENGINE"] == "config.postgresql" and env.bool(
    "DATABASE_PREPARED_STATEMENTS", default=True
):
    # Parameters bound by the server, and a statement run twice on a connection planned once
    # (psycopg keeps the last 100): on the hot paths (the GPS ingest, the polls' fingerprints)
    # PostgreSQL spent longer planning than running. Off for a pooler that cannot carry
    # prepared statements across its connections (PgBouncer before 1.21 in transaction mode).
    DATABASES["default"]["OPTIONS"] = {
        **DATABASES["default"].get("OPTIONS", {}),
        "server_side_binding": True,
        "prepare_threshold": 2,
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and rate-limit counters ----------------------------------------------------------
REDIS_URL = env("REDIS_URL", default="")
if REDIS_URL:
    CACHES = {
        "default": {
            "BACKEND": "config.cache.RedisCache",  # Django's, reusing its client (config/cache.py)
            "LOCATION": REDIS_URL,
            "KEY_PREFIX": env("CACHE_KEY_PREFIX", default="doorstep"),
        }
    }
    # Sessions read from Redis, written through to the database: every logged-in request (each
    # dashboard poll, each driver upload) skips a query. Only with a shared cache: with a
    # per-process memory cache a log-out would not reach the other processes' copies.
    SESSION_ENGINE = "dispatch.sessions.cached_db"
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    # Django's database sessions, the row read in plain SQL (dispatch/sessions).
    SESSION_ENGINE = "dispatch.sessions.db"

# --- Auth -----------------------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    # Django's ModelBackend, also loading the membership with the user (one query a request).
    "dispatch.auth_backends.MemberBackend",
]
# How long the signed-in user's row (with membership and organisation) is kept in the cache, so
# a poll can skip reading it. Saving or deleting a user, membership or organisation drops the
# copy at once; only a write past the models (raw SQL, QuerySet.update) waits this long. Only
# with a shared cache: a per-process memory cache would keep other processes' copies.
SIGNED_IN_USER_CACHE_SECONDS = env.int("SIGNED_IN_USER_CACHE_SECONDS", default=60 if REDIS_URL else 0)
if SIGNED_IN_USER_CACHE_SECONDS and not REDIS_URL:
    raise ImproperlyConfigured(
        "SIGNED_IN_USER_CACHE_SECONDS needs a cache every process shares: set REDIS_URL, or set it to 0."
    )
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "tracking:dashboard"
LOGOUT_REDIRECT_URL = "login"

# django-axes: lock a username from one address after 5 failures for 15 minutes.
AXES_FAILURE_LIMIT = env.int("AXES_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("AXES_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_LOCKOUT_TEMPLATE = "registration/lockout.html"
AXES_RESET_ON_SUCCESS = True
# With Redis the counters live in the shared cache; otherwise in the database (survives restarts).
AXES_HANDLER = (
    "axes.handlers.cache.AxesCacheHandler" if REDIS_URL else "axes.handlers.database.AxesDatabaseHandler"
)
AXES_IPWARE_PROXY_COUNT = env.int("AXES_PROXY_COUNT", default=0) or None

# --- Internationalisation and time ----------------------------------------------------------
LANGUAGE_CODE = "en-gb"
# Stored times are UTC; each request runs in its organisation's zone (OrganizationTimezoneMiddleware).
TIME_ZONE = env("TIME_ZONE", default="UTC")
USE_I18N = True
USE_TZ = True

# --- Static and media files -----------------------------------------------------------------
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
STATICFILES_DIRS = [BASE_DIR / "static"]
MEDIA_URL = "media/"
MEDIA_ROOT = Path(env("MEDIA_ROOT", default=str(BASE_DIR / "media")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": env(
            "STATICFILES_BACKEND",
            default="whitenoise.storage.CompressedManifestStaticFilesStorage",
        )
    },
}
# Uploads (proof photos and signatures, import files) in an S3-compatible bucket instead of
# media/: set the bucket and install the extra `pip install -e '.[s3]'` (django-storages).
# Private objects only; the app streams proof files itself after checking who asks.
if AWS_STORAGE_BUCKET_NAME := env("AWS_STORAGE_BUCKET_NAME", default=""):
    STORAGES["default"] = {
        "BACKEND": "storages.backends.s3.S3Storage",
        "OPTIONS": {
            "bucket_name": AWS_STORAGE_BUCKET_NAME,
            "endpoint_url": env("AWS_S3_ENDPOINT_URL", default="") or None,
            "region_name": env("AWS_S3_REGION_NAME", default="") or None,
            "access_key": env("AWS_ACCESS_KEY_ID", default="") or None,
            "secret_key": env("AWS_SECRET_ACCESS_KEY", default="") or None,
            "default_acl": "private",
            "querystring_auth": True,
            "querystring_expire": 300,
            "file_overwrite": False,
        },
    }
WHITENOISE_USE_FINDERS = DEBUG
WHITENOISE_AUTOREFRESH = DEBUG

# Uploads (CSV import now, proof photos later): refuse big bodies before reading them.
DATA_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
FILE_UPLOAD_MAX_MEMORY_SIZE = 5 * 1024 * 1024
ORDER_IMPORT_MAX_BYTES = env.int("ORDER_IMPORT_MAX_BYTES", default=5 * 1024 * 1024)
ORDER_IMPORT_MAX_ROWS = env.int("ORDER_IMPORT_MAX_ROWS", default=5000)

# --- E-mail ---------------------------------------------------------------------------------
EMAIL_BACKEND = env("EMAIL_BACKEND", default="django.core.mail.backends.console.EmailBackend")
DEFAULT_FROM_EMAIL = env("DEFAULT_FROM_EMAIL", default="Doorstep <noreply@localhost>")
if env("EMAIL_URL", default=""):
    vars().update(env.email("EMAIL_URL"))
# Seconds an SMTP connection may wait for the server. Django's own default is none at all: a
# mail server that stops answering would hold the worker, and its message, past the sending lease.
EMAIL_TIMEOUT = env.int("EMAIL_TIMEOUT", default=30)

# --- SMS (tracking.sms) ---------------------------------------------------------------------
# "log" (default: written to the log, nothing sent), "http" (JSON POST to SMS_HTTP_URL with
# Authorization: Bearer SMS_HTTP_TOKEN), or a dotted path to a backend class.
SMS_BACKEND = env("SMS_BACKEND", default="log")
SMS_HTTP_URL = env("SMS_HTTP_URL", default="")
SMS_HTTP_TOKEN = env("SMS_HTTP_TOKEN", default="")
SMS_HTTP_TIMEOUT = env.float("SMS_HTTP_TIMEOUT", default=10.0)
# The sender the provider shows (a number or an alphanumeric name it allows).
SMS_FROM = env("SMS_FROM", default="Doorstep")
# Shared secret of the provider's inbound-SMS callback (customers replying STOP); empty = off.
SMS_INBOUND_SECRET = env("SMS_INBOUND_SECRET", default="")
# WH-4: how the provider proves an inbound callback is its own. "signature" (default): Standard
# Webhooks headers signed with SMS_INBOUND_SECRET, at most 5 minutes old, each event id acted on
# once; "token": the secret as Authorization Bearer/Basic (providers that cannot sign).
SMS_INBOUND_AUTH = env("SMS_INBOUND_AUTH", default="signature")

# --- Webhooks (tracking.webhooks, docs/webhooks.md) -----------------------------------------
WEBHOOK_TIMEOUT = env.float("WEBHOOK_TIMEOUT", default=15.0)  # seconds per attempt (WH-2)
WEBHOOK_RETRY_HOURS = env.float("WEBHOOK_RETRY_HOURS", default=72.0)  # then failed (JOB-5)
WEBHOOK_ROTATION_GRACE_HOURS = env.float("WEBHOOK_ROTATION_GRACE_HOURS", default=24.0)

# --- Security -------------------------------------------------------------------------------
SECURE_SSL_REDIRECT = env.bool("SECURE_SSL_REDIRECT", default=not DEBUG)
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]  # load balancers probe over plain HTTP
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if env.bool("BEHIND_PROXY", default=False) else None
)
SECURE_HSTS_SECONDS = env.int("SECURE_HSTS_SECONDS", default=0 if DEBUG else 31536000)
SECURE_HSTS_INCLUDE_SUBDOMAINS = True
SECURE_HSTS_PRELOAD = env.bool("SECURE_HSTS_PRELOAD", default=True)
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
SECURE_CROSS_ORIGIN_OPENER_POLICY = "same-origin"
SESSION_COOKIE_SECURE = env.bool("SESSION_COOKIE_SECURE", default=not DEBUG)
CSRF_COOKIE_SECURE = env.bool("CSRF_COOKIE_SECURE", default=not DEBUG)
SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # htmx reads the token from <body hx-headers>, never the cookie
SESSION_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"

# Where map tiles come from. OSM's public tiles have no SLA and forbid heavy use: set your own.
MAP_TILE_URL = env("MAP_TILE_URL", default="https://tile.openstreetmap.org/{z}/{x}/{y}.png")
MAP_TILE_ATTRIBUTION = env("MAP_TILE_ATTRIBUTION", default="&copy; OpenStreetMap contributors")
_tile_origin = "/".join(MAP_TILE_URL.split("/")[:3]).replace("{s}.", "*.")

# Enforced CSP: no inline scripts or styles anywhere; our JS and CSS live in static files.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:", "blob:", _tile_origin],
        "connect-src": ["'self'"],
        "font-src": ["'self'"],
        "object-src": ["'none'"],
        "base-uri": ["'none'"],
        "frame-ancestors": ["'none'"],
        "form-action": ["'self'"],
    }
}
# Driver pages widen geolocation and camera for themselves (tracking.views); everything else denies.
PERMISSIONS_POLICY = {
    "geolocation": [],
    "camera": [],
    "microphone": [],
    "payment": [],
    "usb": [],
}

# --- Route planning ----------------------------------------------------------------------------
# Travel times: an OSRM server's table API when ROUTING_URL is set (e.g. http://osrm:5000),
# else great-circle distance × ROUTING_DETOUR at ROUTING_SPEED_KMH (dispatch.planner.matrix).
ROUTING_URL = env("ROUTING_URL", default="")
ROUTING_TIMEOUT = env.float("ROUTING_TIMEOUT", default=10.0)
ROUTING_SPEED_KMH = env.float("ROUTING_SPEED_KMH", default=25.0)
ROUTING_DETOUR = env.float("ROUTING_DETOUR", default=1.3)

# --- Driver app ---------------------------------------------------------------------------------
# The app offers "mark arrived?" when the driver's fixes of the last ARRIVAL_DWELL_S seconds all
# lie within ARRIVAL_RADIUS_M metres of an open stop (tracking.selectors.arrival_suggestion).
ARRIVAL_DWELL_S = env.int("ARRIVAL_DWELL_S", default=60)
ARRIVAL_RADIUS_M = env.float("ARRIVAL_RADIUS_M", default=75.0)

# --- Customers ---------------------------------------------------------------------------------
# The site's public address, for links in messages (tracking links, unsubscribe): the scheme,
# host and any path prefix the customers' phones reach, e.g. https://track.example.com
SITE_URL = env("SITE_URL", default="http://127.0.0.1:8000")
# The local hour (each organisation's zone) after which yesterday's summary e-mail goes out.
DAILY_SUMMARY_HOUR = env.int("DAILY_SUMMARY_HOUR", default=7)
# Tracking page requests per client address per minute (429 with Retry-After above it).
TRACKING_RATE_PER_MINUTE = env.int("TRACKING_RATE_PER_MINUTE", default=60)

# --- Proof of delivery (pod) -------------------------------------------------------------------
# Every photo and signature is decoded and re-encoded by pod.images; anything larger, with more
# pixels, or not a JPEG/PNG/WebP is refused before it is stored.
POD_MAX_UPLOAD_BYTES = env.int("POD_MAX_UPLOAD_BYTES", default=15_000_000)
POD_MAX_PIXELS = env.int("POD_MAX_PIXELS", default=50_000_000)
POD_SIGNATURE_MAX_BYTES = env.int("POD_SIGNATURE_MAX_BYTES", default=512_000)
POD_MAX_PHOTOS = env.int("POD_MAX_PHOTOS", default=5)
# A proof captured farther than this from the order's address is flagged for the dispatcher.
POD_FAR_FROM_ADDRESS_M = env.int("POD_FAR_FROM_ADDRESS_M", default=300)
# A proof reaching the server this long after its capture is marked as synced late.
POD_LATE_SYNC_MINUTES = env.int("POD_LATE_SYNC_MINUTES", default=15)

# --- Alerts for dispatchers (tracking.alerts) --------------------------------------------------
# Idle: no movement beyond ALERT_IDLE_RADIUS_M for ALERT_IDLE_MINUTES, away from every stop.
ALERT_IDLE_MINUTES = env.int("ALERT_IDLE_MINUTES", default=10)
ALERT_IDLE_RADIUS_M = env.int("ALERT_IDLE_RADIUS_M", default=100)
# Off route: farther than this from the path through the route's remaining stops.
ALERT_OFF_ROUTE_M = env.int("ALERT_OFF_ROUTE_M", default=1500)
# No positions: a route in progress whose driver's fixes stopped arriving this long ago.
ALERT_NO_FIXES_MINUTES = env.int("ALERT_NO_FIXES_MINUTES", default=10)

# --- REST API -------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # DRF's user tokens (the driver app's), read in one query with the membership and driver.
        "dispatch.api_auth.UserTokenAuthentication",
        # Organisation API keys (Authorization: Bearer dsk_…): integrations, never driver endpoints.
        "dispatch.api_auth.ApiKeyAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # drf-spectacular's AutoSchema plus the error answers (400/401/403/404/409/422/429) we send.
    "DEFAULT_SCHEMA_CLASS": "dispatch.api_base.DoorstepAutoSchema",
    # ?page= and ?page_size= (at most 200); every list ends its ordering on the primary key.
    "DEFAULT_PAGINATION_CLASS": "dispatch.pagination.StablePagination",
    "PAGE_SIZE": 50,
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "EXCEPTION_HANDLER": "dispatch.api.exception_handler",
    "DEFAULT_THROTTLE_RATES": {
        "auth": env("API_AUTH_THROTTLE", default="20/min"),
        # Integration endpoints (dispatch.api_base.IntegrationAPIMixin): per API key, per address.
        "api_key": env("API_KEY_THROTTLE", default="600/min"),
        "api_ip": env("API_IP_THROTTLE", default="1200/min"),
    },
}
# How long an Idempotency-Key's first answer is kept for replay (dispatch.tasks purges older).
IDEMPOTENCY_KEY_HOURS = env.int("IDEMPOTENCY_KEY_HOURS", default=24)
# A key whose first request never answered (its process died) is free again after this long.
IDEMPOTENCY_IN_FLIGHT_SECONDS = env.int("IDEMPOTENCY_IN_FLIGHT_SECONDS", default=120)
SPECTACULAR_SETTINGS = {
    "TITLE": "Doorstep API",
    "DESCRIPTION": "Orders, routes, drivers and tracking for last-mile delivery.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI ships in drf-spectacular-sidecar: no CDN, and the split view keeps CSP strict.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Several models have a "status" and "kind": give each choice set its own schema name.
    "ENUM_NAME_OVERRIDES": {
        "OrderStatusEnum": "dispatch.models.Order.Status",
        "RouteStatusEnum": "dispatch.models.Route.Status",
        "StopStatusEnum": "dispatch.models.Stop.Status",
        "PlanStatusEnum": "dispatch.models.Plan.Status",
        "OrderKindEnum": "dispatch.models.Order.Kind",
        "RouteEventKindEnum": "tracking.serializers.ROUTE_EVENT_KINDS",
        "StopEventKindEnum": "tracking.serializers.STOP_EVENT_KINDS",
    },
}

# --- Background jobs (django-q2) ------------------------------------------------------------
# Always the ORM broker on the main database: a task queued inside a transaction that rolls
# back never runs, and a task whose worker is killed runs again after `retry` (Redis loses it).
# A task still running after Q_TIMEOUT seconds is stopped; one whose worker died is handed
# out again after Q_RETRY seconds, which must exceed the timeout (by 30 s at least), or a slow
# task would run twice at once.
Q_TIMEOUT = env.int("Q_TIMEOUT", default=300)
Q_RETRY = env.int("Q_RETRY", default=Q_TIMEOUT + 60)
if Q_RETRY < Q_TIMEOUT + 30:
    raise ImproperlyConfigured(
        f"Q_RETRY ({Q_RETRY} s) must be at least Q_TIMEOUT ({Q_TIMEOUT} s) + 30 s, or a task "
        "still running would be handed to a second worker."
    )
# A message still `sending` this long after a worker claimed it was left by a worker that died:
# the minute sweep then fails it (it may have gone out, so it is never re-sent). A lease not
# longer than the SMS timeout would fail messages whose worker is still waiting for the answer.
NOTIFICATION_SENDING_LEASE_SECONDS = env.int("NOTIFICATION_SENDING_LEASE_SECONDS", default=300)
for _name, _timeout in (("SMS_HTTP_TIMEOUT", SMS_HTTP_TIMEOUT), ("EMAIL_TIMEOUT", EMAIL_TIMEOUT)):
    if _timeout >= NOTIFICATION_SENDING_LEASE_SECONDS:
        raise ImproperlyConfigured(
            f"NOTIFICATION_SENDING_LEASE_SECONDS ({NOTIFICATION_SENDING_LEASE_SECONDS} s) must be longer "
            f"than {_name} ({_timeout:g} s), or messages still being sent would be marked failed "
            "under their worker."
        )
Q_CLUSTER = {
    "name": "doorstep",
    "orm": "default",
    "workers": env.int("Q_WORKERS", default=2),
    "timeout": Q_TIMEOUT,
    "retry": Q_RETRY,
    "max_attempts": 5,
    "catch_up": False,  # a stopped cluster must not replay every missed schedule slot
    "save_limit": 500,
    "ack_failures": True,
    "poll": 1,
    "time_zone": TIME_ZONE,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"}},
    "filters": {"redact_tokens": {"()": "config.logging.RedactTrackingTokens"}},
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": "plain", "filters": ["redact_tokens"]}
    },
    "root": {"handlers": ["console"], "level": env("LOG_LEVEL", default="INFO")},
    # django-q logs every task it enqueues and runs at INFO: with a message per delivery that
    # buries everything else. Q_LOG_LEVEL=INFO brings it back.
    "loggers": {"axes": {"level": "WARNING"}, "django-q": {"level": env("Q_LOG_LEVEL", default="WARNING")}},
}
