"""Settings of the benchmark server: the app's own, plus a bare view to compare against.

Selected with DJANGO_SETTINGS_MODULE=bench.live.settings; everything else still comes from the
environment exactly as in production (DEBUG off, DATABASE_URL, SECRET_KEY...).
"""

import warnings

from config.settings import *  # noqa: F403
from config.settings import REST_FRAMEWORK, STORAGES

# config.urls plus /bench/bare/; the bare view lives in bench code only.
ROOT_URLCONF = "bench.live.urls"

# The in-process query count uses django.test.Client, whose host is "testserver".
ALLOWED_HOSTS = [*ALLOWED_HOSTS, "testserver"]  # noqa: F405

# The app's DRF throttles sit on the token login and the tracker-app endpoint, which the benchmark
# does not call. The customer tracking page's own limiter (TRACKING_RATE_PER_MINUTE, not DRF) is
# lifted by bench.live.server through the environment, and checked at its default by run.py.
# Default classes cleared anyway, so that one added later cannot quietly cap the figures (the
# benchmark prints this); a throttle set on a view itself would still apply.
REST_FRAMEWORK = {**REST_FRAMEWORK, "DEFAULT_THROTTLE_CLASSES": []}

# Nothing is collected for the benchmark: the manifest storage would refuse {% static %} on the
# full page. The #live partial measured here renders no static URL either way.
warnings.filterwarnings("ignore", "No directory at", UserWarning)  # whitenoise: no STATIC_ROOT
STORAGES = {**STORAGES, "staticfiles": {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}}
