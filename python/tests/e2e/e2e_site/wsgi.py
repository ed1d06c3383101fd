"""WSGI entry point. With gunicorn --preload this runs once in the master
before it forks the workers: in shmlimit mode the segment is opened here, so
every worker uses a Limiter opened before fork()."""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "e2e_site.settings")

from django.conf import settings  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402

application = get_wsgi_application()

if settings.MODE == "shmlimit":
    from shmlimit.django.conf import get_limiter

    get_limiter()
