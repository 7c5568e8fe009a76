"""WSGI entry point (kindler.webserver serves kindler.wsgi:application)."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "kindler.settings")

application = get_wsgi_application()
