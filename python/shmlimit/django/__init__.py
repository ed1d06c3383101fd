"""Django and Django REST framework integration of shmlimit.

* :mod:`shmlimit.django.throttling`: DRF throttle classes (drop-ins for
  ``AnonRateThrottle``, ``UserRateThrottle``, ``ScopedRateThrottle``, ...).
* :mod:`shmlimit.django.middleware`: ``RateLimitMiddleware`` for any view,
  ``RateLimitHeadersMiddleware`` for the DRF throttles' headers.
* :mod:`shmlimit.django.ratelimit`: django-ratelimit's ``@ratelimit``,
  ``is_ratelimited``, ``Ratelimited`` and ``RatelimitMiddleware``.
* :mod:`shmlimit.django.conf`: the ``SHMLIMIT`` setting and ``get_limiter()``.
* :mod:`shmlimit.django.checks`: system checks (add ``"shmlimit.django"`` to
  ``INSTALLED_APPS``).
* :mod:`shmlimit.django.testing`: a fresh segment per test.

doc/django.md describes the settings.
"""
