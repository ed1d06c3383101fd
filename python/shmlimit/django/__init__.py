"""Django and Django REST framework integration of shmlimit.

* :mod:`shmlimit.django.throttling`: DRF throttle classes (drop-ins for
  ``AnonRateThrottle``, ``UserRateThrottle``, ``ScopedRateThrottle``, ...).
* :mod:`shmlimit.django.middleware`: ``RateLimitMiddleware`` for any view,
  ``RateLimitHeadersMiddleware`` for the DRF throttles' headers.
* :mod:`shmlimit.django.conf`: the ``SHMLIMIT`` setting and ``get_limiter()``.

doc/django.md describes the settings.
"""
