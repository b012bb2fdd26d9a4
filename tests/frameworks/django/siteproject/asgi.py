"""ASGI entry point of the site project."""

from django.core.asgi import get_asgi_application

application = get_asgi_application()
