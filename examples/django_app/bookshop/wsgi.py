"""The WSGI entry point: ``gunicorn -w 2 bookshop.wsgi``."""

import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "bookshop.settings")
application = get_wsgi_application()
