"""A Content-Security-Policy on every HTML page (Django 5.2 has none built in; 6.0 does).

Only this site's own files may run or style a page: the vendored scripts (htmx, its ws extension, KaTeX, ours) and
stylesheets, no inline script, no inline style attributes (answers mark table alignment with classes, KaTeX styles
through the CSSOM, htmx's indicator stylesheet is switched off in base.html). `connect-src 'self'` covers the chat
socket: CSP Level 3 matches ws:/wss: to this host and port as 'self'. Forms may post here and to the payment
provider's pages (checkout and the customer portal redirect there: browsers check form-action along redirects)."""

from django.conf import settings
from django.utils.deprecation import MiddlewareMixin

from core.async_middleware import HooksOnTheLoop

HEADER = "Content-Security-Policy"


def policy() -> str:
    directives = {
        "default-src": ["'self'"],
        "script-src": ["'self'"],
        "style-src": ["'self'"],
        "img-src": ["'self'", "data:"],
        "font-src": ["'self'"],
        "connect-src": ["'self'"],
        "object-src": ["'none'"],
        "frame-ancestors": ["'none'"],
        "base-uri": ["'self'"],
        "form-action": ["'self'", *settings.CSP_FORM_ACTION_EXTRA],
    }
    return "; ".join(f"{name} {' '.join(sources)}" for name, sources in directives.items())


class ContentSecurityPolicyMiddleware(HooksOnTheLoop, MiddlewareMixin):
    """Adds the policy to HTML responses that carry none of their own (on the event loop under ASGI: it only sets a
    header)."""

    def process_response(self, request, response):
        if HEADER not in response and response.get("Content-Type", "").startswith("text/html"):
            response[HEADER] = policy()
        return response
