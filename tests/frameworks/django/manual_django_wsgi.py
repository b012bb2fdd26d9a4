"""A Django project's WSGI entry point with Beacon set up by hand (DJANGO_SETTINGS_MODULE names it)."""

from django.core.wsgi import get_wsgi_application
from opentelemetry.instrumentation.django import DjangoInstrumentor
from opentelemetry.sdk.trace import TracerProvider

import beacon_otel

provider = TracerProvider()
beacon = beacon_otel.configure(tracer_provider=provider)
DjangoInstrumentor().instrument(tracer_provider=provider, **beacon.hooks("django"))

application = get_wsgi_application()
