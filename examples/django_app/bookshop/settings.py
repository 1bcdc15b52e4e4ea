"""Settings of the bookshop example: no database, nearstate as the read model."""

import os

SECRET_KEY = os.environ.get("NEARSTATE_SECRET", "an example secret, change it")
DEBUG = False
ALLOWED_HOSTS = ["127.0.0.1", "localhost"]
ROOT_URLCONF = "bookshop.urls"
WSGI_APPLICATION = "bookshop.wsgi.application"
INSTALLED_APPS = ["nearstate.frameworks.django"]
MIDDLEWARE = ["nearstate.frameworks.django.middleware.NearstateMiddleware"]
DATABASES: dict = {}
USE_TZ = True

NEARSTATE = {
    "DATASET": os.environ["NEARSTATE_DATASET"],
    "SCHEMA": "bookshop.views.SCHEMA",
    "FOLLOW": os.environ.get("NEARSTATE_FOLLOW", "1") != "0",
    "TIMEOUT": 5.0,
}
