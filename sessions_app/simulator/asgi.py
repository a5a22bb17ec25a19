"""The simulator on its own: an ASGI app with its HTTP routes under `/simulator/` and
the sideband at `/simulator/v1/realtime`, the same layout as the embedded mount.

It needs Django set up (settings with the `SIMULATOR_*` names, as `manage.py simulator`
does) but none of the host project's routes or middleware: requests are resolved
against the URLconf below, not `ROOT_URLCONF`.
"""

from __future__ import annotations

from channels.routing import ProtocolTypeRouter, URLRouter
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response
from django.urls import include, path

from . import urls, views
from .routing import websocket_urlpatterns

urlpatterns = [path("simulator/", include(urls))]
# Errors in OpenAI's JSON shape, not the host project's pages.
handler404 = views.not_found
handler500 = views.server_error


class SimulatorHandler(ASGIHandler):
    """Django's ASGI handler, minus the host project's middleware and URLconf."""

    def load_middleware(self, is_async: bool = False) -> None:
        # The project's middleware (maintenance, rate limits, sessions) guards the
        # product, not its upstream stand-in: the chain is just view resolution,
        # with Django's exception-to-response wrapper.
        self._view_middleware = []
        self._template_response_middleware = []
        self._exception_middleware = []
        self._middleware_chain = convert_exception_to_response(self._get_response_async)

    def create_request(self, scope, body_file):
        request, error_response = super().create_request(scope, body_file)
        if request is not None:
            request.urlconf = __name__  # Django resolves this request against our routes
        return request, error_response


application = ProtocolTypeRouter(
    {"http": SimulatorHandler(), "websocket": URLRouter(websocket_urlpatterns)}
)
