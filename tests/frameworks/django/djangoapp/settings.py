"""The smallest Django project the auto-run tests need: two views, no database."""

SECRET_KEY = "tests-only-not-a-secret"
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "djangoapp.urls"
INSTALLED_APPS: list[str] = []
MIDDLEWARE = ["djangoapp.middleware.session_user"]
DATABASES: dict[str, dict[str, str]] = {}
USE_TZ = True
