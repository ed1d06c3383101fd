"""Middleware and authentication of the end-to-end site. Not in views.py:
DRF imports the authentication class while views.py is being imported
(APIView reads its settings when the class is created)."""
import os

from rest_framework.authentication import BaseAuthentication


class WorkerPidMiddleware:
    """Every response says which worker process served it."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Worker-Pid"] = str(os.getpid())
        return response


class SimpleUser:
    is_authenticated = True

    def __init__(self, pk):
        self.pk = pk


class HeaderUserAuthentication(BaseAuthentication):
    """The user id from an X-User header (no database)."""

    def authenticate(self, request):
        uid = request.META.get("HTTP_X_USER")
        return (SimpleUser(int(uid)), None) if uid else None
