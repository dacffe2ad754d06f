"""Settings, read from the environment. Safe defaults are the production ones.

DEBUG is off unless DJANGO_DEBUG=1; with DEBUG off, a secret key is required: DJANGO_SECRET_KEY, or
else the key file (DJANGO_SECRET_KEY_FILE, default var/secret_key, which `make run` generates once).
DATABASE_URL selects PostgreSQL anywhere; without it an embedded server under var/ is used.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import dj_database_url
from csp.constants import NONE, SELF, UNSAFE_INLINE
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent


def env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str = "") -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


DEBUG = env_flag("DJANGO_DEBUG")
# Without DJANGO_SECRET_KEY, the key file is read if it exists. Without either, development and offline
# commands (makemigrations, check) still run on a placeholder key; serving (config.wsgi / config.asgi)
# and `check --deploy` refuse it when DEBUG is off.
SECRET_KEY_FILE = Path(os.environ.get("DJANGO_SECRET_KEY_FILE") or BASE_DIR / "var" / "secret_key")
SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "")
if not SECRET_KEY and SECRET_KEY_FILE.is_file():
    SECRET_KEY = SECRET_KEY_FILE.read_text().strip()
SECRET_KEY_MISSING = not SECRET_KEY
if SECRET_KEY_MISSING:
    SECRET_KEY = "django-insecure-placeholder-key-set-DJANGO_SECRET_KEY-in-production-0123456789"

ALLOWED_HOSTS = env_list("DJANGO_ALLOWED_HOSTS", "localhost,127.0.0.1" if DEBUG else "")
CSRF_TRUSTED_ORIGINS = env_list("DJANGO_CSRF_TRUSTED_ORIGINS")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "csp",
    "pgtrigger",
    "pghistory",
    "pghistory.admin",
    "trials",
    "patients",
    "assays",
    "audit",
    "locking",
    "signatures",
    "dataqueries",
    "idempotency",
    "exports",
    "summaries",
    "procrastinate.contrib.django",  # background jobs on PostgreSQL (exports): no broker
    "axes",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "csp.middleware.CSPMiddleware",
    # Above IdempotencyMiddleware: that one keeps answers not marked no-store, so it must see them unmarked.
    "config.headers.SecurityHeadersMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "trials.middleware.SiteTimeZoneMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "config.audit.AuditContextMiddleware",
    "config.api_limits.ApiBodyLimitMiddleware",
    "config.api_limits.ApiNulMiddleware",
    "idempotency.middleware.IdempotencyMiddleware",
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            # |cells, |cells_per_kg, |date_shown and |date_time_shown in every template (config.display).
            "builtins": ["config.display_tags"],
        },
    },
]

# --- Database: PostgreSQL only.
DATABASE_URL = os.environ.get("DATABASE_URL", "")
if not DATABASE_URL:
    from config.embedded_db import embedded_database_url

    DATABASE_URL = embedded_database_url(BASE_DIR)
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=60, conn_health_checks=True)}
if os.environ.get("DATABASE_USER"):  # connect as the application's role (see manage.py create_app_role)
    DATABASES["default"]["USER"] = os.environ["DATABASE_USER"]
if DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured("DATABASE_URL must point to PostgreSQL.")
# Behind a transaction-mode pooler (PgBouncer pool_mode=transaction, DATABASE_POOL_MODE=transaction) each
# transaction may run on another server connection: no cursor may outlive its transaction (Django's chunked
# reads outside a transaction use WITH HOLD cursors) and psycopg must not prepare statements on a connection
# it may not see again. DATABASE_DISABLE_SERVER_SIDE_CURSORS=1 sets the first alone.
TRANSACTION_POOLING = os.environ.get("DATABASE_POOL_MODE", "session").strip().lower() == "transaction"
DATABASES["default"]["DISABLE_SERVER_SIDE_CURSORS"] = TRANSACTION_POOLING or env_flag(
    "DATABASE_DISABLE_SERVER_SIDE_CURSORS")
if TRANSACTION_POOLING:
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = None
# The token's read and a small post's read (config.db, assays.services) are prepared once per connection
# with a generic plan: their planning cost more than their execution. A generic plan is made with the
# statistics of its time; connections live CONN_MAX_AGE (60 s), so none outlives a minute. Batches are
# planned for their arrays each time (a generic plan misjudged them on a growing table). Nothing
# else is prepared automatically (the threshold is out of reach), and plan_cache_mode only concerns prepared
# statements and PL/pgSQL's cached plans, never Django's own queries. Off behind a transaction-mode pooler,
# or with DATABASE_DISABLE_PREPARED_READS=1.
PREPARED_READS = not TRANSACTION_POOLING and not env_flag("DATABASE_DISABLE_PREPARED_READS")
if PREPARED_READS:
    _options = DATABASES["default"].setdefault("OPTIONS", {})
    _options.setdefault("prepare_threshold", 2**31 - 1)
    _options["options"] = f"{_options.get('options', '')} -c plan_cache_mode=force_generic_plan".strip()
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# Audit trail: event tables refuse UPDATE and DELETE (PostgreSQL triggers), whoever connects.
PGHISTORY_APPEND_ONLY = True

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-gb"
# One date and one date-time format in every admin page (config.display writes the same).
FORMAT_MODULE_PATH = ["config.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "var" / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"
        if DEBUG
        else "whitenoise.storage.CompressedManifestStaticFilesStorage"
    },
    # Export packages (exports.storage). Local by default; when web servers and workers run on several
    # machines, point this at shared storage (any django-storages backend, e.g. S3).
    "exports": {
        "BACKEND": "django.core.files.storage.FileSystemStorage",
        "OPTIONS": {"location": os.environ.get("DJANGO_EXPORTS_DIR") or str(BASE_DIR / "var" / "exports")},
    },
}
# --- Exports: a running job's heartbeat (seconds between beats), and when a silent job counts as stalled
# (its worker died) and may be retried.
EXPORTS_HEARTBEAT_SECONDS = float(os.environ.get("DJANGO_EXPORTS_HEARTBEAT_SECONDS", "10"))
EXPORTS_STALLED_AFTER_SECONDS = float(os.environ.get("DJANGO_EXPORTS_STALLED_AFTER_SECONDS", "120"))
# A large SDTM LB or PC file is read in two parts, the second on another connection on the export's snapshot
# (exports.snapshot): a worker then holds two connections for a while.
EXPORTS_SECOND_CONNECTION = env_flag("DJANGO_EXPORTS_SECOND_CONNECTION", default=True)

# --- Security: production defaults, relaxed only by DEBUG or explicit settings.
SECURE_SSL_REDIRECT = env_flag("DJANGO_SECURE_SSL_REDIRECT", not DEBUG)
SESSION_COOKIE_SECURE = env_flag("DJANGO_SECURE_COOKIES", not DEBUG)
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_AGE = 8 * 60 * 60
SECURE_HSTS_SECONDS = int(os.environ.get("DJANGO_HSTS_SECONDS", "0" if DEBUG else "31536000"))
SECURE_HSTS_INCLUDE_SUBDOMAINS = not DEBUG
SECURE_HSTS_PRELOAD = not DEBUG
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
if env_flag("DJANGO_BEHIND_PROXY"):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Every page loads scripts, styles, images and fonts from this origin only (the API docs' Swagger UI is
# served from drf-spectacular-sidecar's static files, not a CDN). Inline scripts are refused; inline styles
# are allowed for the few the admin, the browsable API and Swagger UI write into their pages.
CONTENT_SECURITY_POLICY = {
    "DIRECTIVES": {
        "default-src": [SELF],
        "script-src": [SELF],
        "style-src": [SELF, UNSAFE_INLINE],
        "img-src": [SELF, "data:"],
        "font-src": [SELF],
        "connect-src": [SELF],
        "object-src": [NONE],
        "base-uri": [SELF],
        "form-action": [SELF],
        "frame-ancestors": [NONE],
    },
}

LOGIN_URL = "admin:login"

# --- Login throttling (21 CFR 11.300(d)): failed admin logins, wrong API tokens and wrong signing passwords
# lock the account (and the client address) after AXES_FAILURE_LIMIT failures within the cool-off, for the
# cool-off (config.lockout). The attempts are in the admin's "Access attempts"; deleting them unlocks.
AUTHENTICATION_BACKENDS = ["config.lockout.LockoutBackend", "django.contrib.auth.backends.ModelBackend"]
AXES_FAILURE_LIMIT = int(os.environ.get("DJANGO_LOGIN_FAILURE_LIMIT", "5"))
AXES_COOLOFF_TIME = timedelta(minutes=int(os.environ.get("DJANGO_LOGIN_COOLOFF_MINUTES", "30")))
AXES_LOCKOUT_PARAMETERS = "config.lockout.lockout_parameters"
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "config.lockout.lockout_response"
AXES_VERBOSE = False
if env_flag("DJANGO_BEHIND_PROXY"):  # the client is the address the proxy saw, not the proxy
    AXES_CLIENT_IP_CALLABLE = "config.lockout.forwarded_client_ip"

# --- API request bodies: a full batch of 10,000 laboratory results is about 3 MB of JSON. A larger body
# is answered 413 (code body_too_large) before any view runs; Django's own limit is raised to match.
API_MAX_BODY_BYTES = int(os.environ.get("DJANGO_API_MAX_BODY_MB", "32")) * 1024 * 1024
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "trials.api_auth.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "config.api.StablePagination",
    "DEFAULT_FILTER_BACKENDS": ["config.api.StrictFilterBackend"],
    "DEFAULT_VERSIONING_CLASS": "rest_framework.versioning.URLPathVersioning",
    "ALLOWED_VERSIONS": ["v1"],
    "DEFAULT_VERSION": "v1",
    "EXCEPTION_HANDLER": "config.api.exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer",
                                 "rest_framework.renderers.BrowsableAPIRenderer"],
    # The API takes JSON only: a form, multipart, text or XML body is 415 unsupported_media_type.
    "DEFAULT_PARSER_CLASSES": ["config.api_parsers.StrictJSONParser"],
    "TEST_REQUEST_DEFAULT_FORMAT": "json",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "CAR-T trial data API",
    "DESCRIPTION": "Subjects, treatment, safety and assay results of CAR-T trials, scoped to the caller's sites.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SWAGGER_UI_DIST": "SIDECAR",  # from this origin, so the Content-Security-Policy can stay 'self'
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    "POSTPROCESSING_HOOKS": ["drf_spectacular.hooks.postprocess_schema_enums",
                             "idempotency.schema.add_idempotency_key_header",
                             "config.schema.document_errors"],
    "ENUM_NAME_OVERRIDES": {
        "AttributionEnum": "patients.models.Attribution",
        "SubjectStatusEnum": "patients.models.SubjectStatus",
        "OffStudyReasonEnum": "patients.models.OffStudyReason",
        "CnsStatusEnum": "patients.models.CnsStatus",
        "ProductLotStatusEnum": "patients.models.ProductLot.Status",
        "ProductSourceEnum": "trials.models.Product.Source",
        "AntigenEnum": "trials.models.Antigen",
        "ScfvOriginEnum": "trials.models.ScfvOrigin",
        "AdverseEventCategoryEnum": "patients.models.AdverseEvent.Category",
        "ResponseCategoryEnum": "patients.models.ResponseAssessment.Category",
        "LockLevelEnum": "locking.models.Level",
    },
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"console": {"class": "logging.StreamHandler"}},
    "root": {"handlers": ["console"], "level": os.environ.get("DJANGO_LOG_LEVEL", "INFO")},
    "loggers": {"pgserver": {"level": "WARNING"}, "axes": {"level": "WARNING"},
                # The task queue logs every registration at start-up; its workers' job lines at INFO on request.
                "procrastinate": {"level": os.environ.get("DJANGO_PROCRASTINATE_LOG_LEVEL", "WARNING")}},
}
