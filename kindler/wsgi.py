"""WSGI entry point (gunicorn kindler.wsgi)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")

application = get_wsgi_application()
