"""Settings of the re-created django_kafka list endpoint.

Production-like: DEBUG off, persistent database connections, DRF's JSON renderer only (no
browsable API). No admin, sessions, auth or messages, and none of their middleware; the
rest of the old middleware stack is kept (it needs no app). The database comes from the old
service's variables, plus DB_SCHEMA (rowsync's per-run schema) as the search_path.
"""

import os

SECRET_KEY = "benchmark-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["*"]
ROOT_URLCONF = "oldservice.urls"
WSGI_APPLICATION = "oldservice.wsgi.application"
USE_TZ = True
TIME_ZONE = "UTC"

INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "rest_framework",
    "some_models",
]

# The old service's stack less the session, auth and messages middleware and its Kafka
# response-log middleware (left out: the baseline only gets faster for it).
MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "HOST": os.environ.get("DB_HOST", "127.0.0.1"),
        "PORT": os.environ.get("DB_PORT", "5432"),
        "NAME": os.environ.get("DB_NAME", "postgres"),
        "USER": os.environ.get("POSTGRES_USER", "postgres"),
        "PASSWORD": os.environ.get("POSTGRES_PASSWORD", ""),
        "CONN_MAX_AGE": 600,
        "OPTIONS": {"options": f"-c search_path={os.environ.get('DB_SCHEMA', 'public')}"},
    }
}

REST_FRAMEWORK = {
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    # Server errors on stderr (with DEBUG off Django would only mail them to ADMINS).
    "handlers": {"stderr": {"class": "logging.StreamHandler"}},
    "loggers": {"django": {"handlers": ["stderr"], "level": "ERROR"}},
}
