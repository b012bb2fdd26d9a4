"""Django's command line with Beacon set up by hand, as a project's manage.py would do it."""

import os
import sys

if __name__ == "__main__":
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "djangoapp.settings")
    from opentelemetry.instrumentation.django import DjangoInstrumentor
    from opentelemetry.sdk.trace import TracerProvider

    import beacon_otel

    provider = TracerProvider()
    beacon = beacon_otel.configure(tracer_provider=provider)
    DjangoInstrumentor().instrument(tracer_provider=provider, **beacon.hooks("django"))
    from django.core.management import execute_from_command_line

    execute_from_command_line(sys.argv)
