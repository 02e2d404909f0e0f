"""djangorestframework-simplejwt's stock views in a one-file Django project on 127.0.0.1, for
tokend's interop tests (tests/it/interop.rs). Prints {"port": N} on stdout once listening and
exits when its stdin closes.

  POST /api/token/           TokenObtainPairView   {username, password} -> {refresh, access}
  POST /api/token/refresh/   TokenRefreshView      {refresh} -> {access, refresh}

ROTATE_REFRESH_TOKENS and BLACKLIST_AFTER_ROTATION are on, so each refresh token works once;
ACCESS_TOKEN_LIFETIME is $TTL seconds (default 5). The answers carry no expires_in: a client
learns the lifetime from the access token's `exp`. User alice / $USER_PASSWORD. The database
is SQLite at $DB (a fresh file per server).

The server's own view, on extra routes under /admin/:
  GET /admin/log            every token request: time, path, status, the refresh token
                            presented, the tokens issued, the error code
  GET /admin/check?token=   simplejwt's JWTAuthentication on `Authorization: Bearer token`
  GET /admin/blacklist?user=  blacklists every outstanding refresh token of that user
"""

import json
import os
import sys
import threading
import time
from datetime import timedelta
from wsgiref.simple_server import WSGIRequestHandler, make_server

import django
from django.conf import settings

settings.configure(
    DEBUG=False,
    SECRET_KEY="interop-tests-only-" + "x" * 40,
    ALLOWED_HOSTS=["127.0.0.1", "localhost"],
    ROOT_URLCONF=__name__,
    INSTALLED_APPS=[
        "django.contrib.auth",
        "django.contrib.contenttypes",
        "rest_framework",
        "rest_framework_simplejwt.token_blacklist",
    ],
    MIDDLEWARE=[__name__ + ".record"],
    DATABASES={"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": os.environ["DB"]}},
    USE_TZ=True,
    # The default PBKDF2 costs about a second per login on a small machine; tests need speed.
    PASSWORD_HASHERS=["django.contrib.auth.hashers.MD5PasswordHasher"],
    REST_FRAMEWORK={
        "DEFAULT_AUTHENTICATION_CLASSES": [],
        "DEFAULT_PERMISSION_CLASSES": [],
        "UNAUTHENTICATED_USER": None,
    },
    SIMPLE_JWT={
        "ACCESS_TOKEN_LIFETIME": timedelta(seconds=int(os.environ.get("TTL", "5"))),
        "REFRESH_TOKEN_LIFETIME": timedelta(hours=1),
        "ROTATE_REFRESH_TOKENS": True,
        "BLACKLIST_AFTER_ROTATION": True,
        "UPDATE_LAST_LOGIN": False,
    },
)
django.setup()

from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.http import JsonResponse  # noqa: E402
from django.urls import path  # noqa: E402
from rest_framework_simplejwt.authentication import JWTAuthentication  # noqa: E402
from rest_framework_simplejwt.token_blacklist.models import (  # noqa: E402
    BlacklistedToken,
    OutstandingToken,
)
from rest_framework_simplejwt.views import TokenObtainPairView, TokenRefreshView  # noqa: E402

LOG = []


def record(get_response):
    """Logs every request to the token views with what it presented and got back."""

    def middleware(request):
        started = int(time.time() * 1000)
        presented = None
        if request.path.startswith("/api/token/"):
            try:
                presented = json.loads(request.body or b"{}").get("refresh")
            except ValueError:
                pass
        response = get_response(request)
        if request.path.startswith("/api/token/"):
            try:
                body = json.loads(response.content or b"{}")
            except ValueError:
                body = {}
            LOG.append(
                {
                    "at_ms": started,
                    "path": request.path,
                    "status": response.status_code,
                    "content_type": request.content_type,
                    "refresh_token": presented,
                    "access_token": body.get("access"),
                    "issued_refresh_token": body.get("refresh"),
                    "code": body.get("code"),
                    "detail": body.get("detail"),
                }
            )
        return response

    return middleware


def admin_log(request):
    return JsonResponse(LOG, safe=False)


def admin_check(request):
    token = request.GET.get("token", "")
    request.META["HTTP_AUTHORIZATION"] = "Bearer " + token
    try:
        found = JWTAuthentication().authenticate(request)
    except Exception as e:  # noqa: BLE001 - any refusal is the answer
        return JsonResponse({"active": False, "reason": str(e)})
    if found is None:
        return JsonResponse({"active": False, "reason": "no token"})
    user, validated = found
    return JsonResponse({"active": True, "user": user.username, "exp": validated["exp"]})


def admin_blacklist(request):
    revoked = []
    for t in OutstandingToken.objects.filter(user__username=request.GET.get("user", "")):
        _, created = BlacklistedToken.objects.get_or_create(token=t)
        if created:
            revoked.append(t.token)
    return JsonResponse({"revoked": revoked})


urlpatterns = [
    path("api/token/", TokenObtainPairView.as_view()),
    path("api/token/refresh/", TokenRefreshView.as_view()),
    path("admin/log", admin_log),
    path("admin/check", admin_check),
    path("admin/blacklist", admin_blacklist),
]


class QuietHandler(WSGIRequestHandler):
    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        sys.stderr.write("%s\n" % (format % args))


def main():
    call_command("migrate", verbosity=0, interactive=False)
    from django.contrib.auth.models import User

    User.objects.create_user("alice", password=os.environ.get("USER_PASSWORD", "alice-pass"))
    server = make_server("127.0.0.1", 0, get_wsgi_application(), handler_class=QuietHandler)

    def watch_stdin():
        sys.stdin.read()
        os._exit(0)

    threading.Thread(target=watch_stdin, daemon=True).start()
    print(json.dumps({"port": server.server_port}), flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
