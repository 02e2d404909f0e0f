#!/usr/bin/env python3
"""A minimal OpenID provider on loopback for the oidc-agent comparison: discovery, a token
endpoint (refresh_token and client_credentials grants, client_secret_basic or _post), empty
JWKS, userinfo. Not a real OP: just enough for oidc-gen --rt / oidc-token --force-new.

Usage: oidc_mock.py PORT   (prints "ready" on stdout once listening; counts in GET /stats)
"""

import base64
import json
import secrets
import sys
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

CLIENT_ID = "bench"
CLIENT_SECRET = "bench-secret"
REFRESH_TOKEN = "rt-bench-0001"
STATS = {"token": 0}


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    # One write per answer and no Nagle: otherwise a kept-alive client (tokend's pool) waits
    # for a delayed ACK (40 ms) between the header and body segments.
    disable_nagle_algorithm = True

    def log_message(self, *a):
        pass

    def send_json(self, code, obj):
        body = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self._headers_buffer.append(b"\r\n")
        self.wfile.write(b"".join(self._headers_buffer) + body)
        self._headers_buffer = []

    def issuer(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/"

    def do_GET(self):
        iss = self.issuer()
        if self.path.startswith("/.well-known/openid-configuration"):
            self.send_json(
                200,
                {
                    "issuer": iss,
                    "authorization_endpoint": iss + "authorize",
                    "token_endpoint": iss + "token",
                    "userinfo_endpoint": iss + "userinfo",
                    "jwks_uri": iss + "jwks",
                    "revocation_endpoint": iss + "revoke",
                    "device_authorization_endpoint": iss + "device",
                    "scopes_supported": ["openid", "profile", "offline_access"],
                    "response_types_supported": ["code"],
                    "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", "password"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["RS256"],
                    "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                    "code_challenge_methods_supported": ["S256"],
                },
            )
        elif self.path.startswith("/jwks"):
            self.send_json(200, {"keys": []})
        elif self.path.startswith("/userinfo"):
            self.send_json(200, {"sub": "bench"})
        elif self.path.startswith("/stats"):
            self.send_json(200, STATS)
        else:
            self.send_json(404, {"error": "not_found"})

    def do_POST(self):
        n = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
        if self.path.startswith("/revoke"):
            self.send_json(200, {})
            return
        if not self.path.startswith("/token"):
            self.send_json(404, {"error": "not_found"})
            return
        cid, csec = form.get("client_id"), form.get("client_secret")
        auth = self.headers.get("Authorization", "")
        if auth.startswith("Basic "):
            u, _, p = base64.b64decode(auth[6:]).decode().partition(":")
            cid, csec = urllib.parse.unquote_plus(u), urllib.parse.unquote_plus(p)
        if (cid, csec) != (CLIENT_ID, CLIENT_SECRET):
            self.send_json(401, {"error": "invalid_client"})
            return
        grant = form.get("grant_type")
        if grant == "refresh_token" and form.get("refresh_token") != REFRESH_TOKEN:
            self.send_json(400, {"error": "invalid_grant"})
            return
        if grant not in ("refresh_token", "client_credentials"):
            self.send_json(400, {"error": "unsupported_grant_type"})
            return
        STATS["token"] += 1
        out = {
            "access_token": "at-" + secrets.token_urlsafe(24),
            "token_type": "Bearer",
            "expires_in": 3600,
            "scope": form.get("scope") or "openid offline_access",
            "iat": int(time.time()),
        }
        if grant == "refresh_token":
            out["refresh_token"] = REFRESH_TOKEN
        self.send_json(200, out)


if __name__ == "__main__":
    srv = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1])), H)
    print("ready", flush=True)
    srv.serve_forever()
