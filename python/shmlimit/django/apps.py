"""The Django application ``shmlimit.django``: add it to INSTALLED_APPS for
the system checks of the ``SHMLIMIT`` setting and the throttle rates
(``manage.py check``; ids ``shmlimit.E001`` ... in doc/django.md)."""
from django.apps import AppConfig


class ShmlimitConfig(AppConfig):
    name = "shmlimit.django"
    label = "shmlimit"
    verbose_name = "shmlimit rate limiting"
    default = True

    def ready(self) -> None:
        from . import checks  # noqa: F401  (registers the checks)
