"""OpenTelemetry instrumentations for web frameworks that OpenTelemetry itself does not cover.

Each produces standard HTTP server spans (both semantic-convention generations, as
``OTEL_SEMCONV_STABILITY_OPT_IN`` asks) that any exporter can use, and is registered under the
``opentelemetry_instrumentor`` entry point so that ``opentelemetry-instrument`` finds it.
"""
