#!/usr/bin/env python3
"""Writes the seed corpora under fuzz/seeds/<target>/ (committed; re-run after editing).

Provider targets read the first two bytes as `raw` with status = 100 + raw % 500, so a seed
for HTTP status S starts with (S - 100) as two big-endian bytes. Answers are the ones in
/work/shared/PROVIDERS.md (the providers' own documentation), plus the usual failure shapes.
"""
import base64
import json
import os
import shutil

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

def b64(obj):
    return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

# The access token of Vandar's documentation (seed 000): exp - iat = 5 days.
VANDAR_JWT = ("eyJ0eXAiOiJKV1QiLCJhbGciOiJSUzI1NiJ9."
              "eyJhdWQiOiIyIiwianRpIjoiYjlkODRhNjc1MmVhZWUxMzI1NTZjNTNhMzIwMThiNGNkMDk3MDY4NzJkNGZkMzJmNDJjOGQ1NzZkNGIyZjhiZTYzM2Q1YjFhYjY0NWRmMGYiLCJpYXQiOjE2MTE3NTQ5MjIsIm5iZiI6MTYxMTc1NDkyMiwiZXhwIjoxNjEyMTg2OTIyLCJzdWIiOiIyOSIsInNjb3BlcyI6WyIqIl19"
              ".c2ln")
SABA_JWT = "eyJhbGciOiJIUzI1NiJ9." + b64({"exp": 1900000000, "VirtualNumber": "30001234"}) + ".c2ln"
REFRESH = "def50200a1b2c3d4e5f6"
OPAQUE = "08da627f-6773-4112-8355-47c94c7ac717"
FA_WRONG = "نام کاربری یا رمز عبور اشتباه است"
FA_OK = "عملیات با موفقیت انجام شد"

def answer(status, body):
    raw = status - 100
    if isinstance(body, (dict, list)):
        body = json.dumps(body, ensure_ascii=False)
    if isinstance(body, str):
        body = body.encode()
    return raw.to_bytes(2, "big") + body

COMMON = {
    "html_502": answer(502, "<html><body>502 Bad Gateway</body></html>"),
    "empty_200": answer(200, ""),
    "rate_limited_429": answer(429, {"error": "slow_down"}),
    "not_utf8_200": answer(200, b"\xff\xfe{\x00"),
}

SEEDS = {
    "vandar_login": {
        "ok": answer(200, {"status": 1, "data": {"token": VANDAR_JWT, "user": {"national_code": "0012345678", "mobile": "09123456789"}}}),
        "ok_string_status": answer(200, {"status": "1", "data": {"token": OPAQUE}}),
        "wrong_password_400": answer(400, {"status": 0, "error": FA_WRONG}),
        "status_0_on_200": answer(200, {"status": 0, "error": FA_WRONG}),
        "token_with_space": answer(200, {"status": 1, "data": {"token": "a b"}}),
        **COMMON,
    },
    "vandar_refresh": {
        "ok": answer(200, {"token_type": "Bearer", "expires_in": 432000, "access_token": VANDAR_JWT, "refresh_token": REFRESH}),
        "ok_no_refresh": answer(200, {"token_type": "Bearer", "expires_in": "432000", "access_token": OPAQUE}),
        "unauthorized_401": answer(401, '{"unauthorized"}'),
        "bad_request_400": answer(400, {"message": "refresh token is invalid"}),
        "refresh_null": answer(200, {"access_token": OPAQUE, "refresh_token": None, "expires_in": 1e300}),
        **COMMON,
    },
    "saba_authenticate": {
        "ok": answer(200, {"status": "200", "message": FA_OK, "id": 1, "data": {"Id": "1", "FirstName": "x", "LastName": "y", "Username": "sabauser", "Domain": "d", "VirtualNumber": "30001234", "Token": SABA_JWT}, "errors": []}),
        "ok_number_status": answer(200, {"status": 200, "data": {"Token": OPAQUE}}),
        "envelope_401": answer(200, {"status": "401", "message": FA_WRONG, "data": None, "errors": ["invalid credentials"]}),
        "envelope_500": answer(200, {"status": " 500 ", "message": "m", "errors": [{"code": 1}]}),
        "empty_token": answer(200, {"status": "200", "data": {"Token": ""}}),
        "no_status": answer(200, {"data": {"Token": OPAQUE}}),
        **COMMON,
    },
    "oauth2_token": {
        "yavapteke_ok": answer(200, {"access_token": OPAQUE, "expires_in": 3600, "token_type": "Bearer"}),
        "rotated": answer(200, {"access_token": VANDAR_JWT, "refresh_token": "r2", "token_type": "bearer", "expires_in": "60"}),
        "invalid_client_400": answer(400, {"error": "invalid_client", "error_description": "Client authentication failed"}),
        "invalid_grant_400": answer(400, {"error": "invalid_grant"}),
        "server_error_500": answer(500, "service error; if it repeats, tell the developers"),
        "redirect_302": answer(302, ""),
        "token_not_string": answer(200, {"access_token": 5, "expires_in": -1}),
        **COMMON,
    },
    "oauth2_discovery": {
        "ok": answer(200, {"issuer": "https://idp.example", "token_endpoint": "https://idp.example/oauth2/token", "jwks_uri": "https://idp.example/jwks"}),
        "ftp_endpoint": answer(200, {"token_endpoint": "ftp://idp.example/token"}),
        "missing": answer(200, {"issuer": "https://idp.example"}),
        "not_found_404": answer(404, "Not Found"),
        **COMMON,
    },
    "http_json": {
        "login_ok": answer(200, {"data": {"token": VANDAR_JWT, "expires_in": 432000}}),
        "refresh_ok": answer(200, {"data": {"token": OPAQUE, "refresh_token": REFRESH, "expires_in": "3600"}}),
        "refresh_null": answer(200, {"data": {"token": OPAQUE, "refresh_token": None}}),
        "refresh_number": answer(200, {"data": {"token": OPAQUE, "refresh_token": 7}}),
        "wrong_password_401": answer(401, {"status": 0, "error": FA_WRONG}),
        **COMMON,
    },
}

# jwt: mode byte 0 = the token as text; 1 = the payload JSON, base64url-encoded by the target.
SEEDS["jwt"] = {
    "vandar_doc_token": b"\x00" + VANDAR_JWT.encode(),
    "saba_token": b"\x00" + SABA_JWT.encode(),
    "opaque": b"\x00" + OPAQUE.encode(),
    "padded_payload": b"\x00eyJhbGciOiJIUzI1NiJ9." + base64.urlsafe_b64encode(b'{"exp":1612186922}') + b".sig",
    "payload_int": b"\x01" + json.dumps({"exp": 1612186922, "sub": "29"}).encode(),
    "payload_float": b"\x03" + b'{"exp":1.5e9}',
    "payload_edge": b"\x01" + b'{"exp":10000000000}',
    "payload_negative": b"\x01" + b'{"exp":-1}',
    "payload_huge": b"\x01" + b'{"exp":1e300}',
}

# render: NUL-separated template, token, token_type, credential, issued_at, expires_at.
def fields(*parts):
    return b"\x00".join(p.encode() if isinstance(p, str) else p for p in parts)

SEEDS["render"] = {
    "header": fields("Authorization: Bearer {{token}}\n", VANDAR_JWT, "Bearer", "saba-sms", "1800000000", "1800003600"),
    "all_placeholders": fields("{{ token }} {{token_type}} {{expires_at}} {{credential}} {{unknown}} {{", OPAQUE, "bearer", "any-idp", "0", "253402300799"),
    "units": fields("80%", "1h30m", "0640", "0o777", "", ""),
    "units_bad": fields("1e400%", "30", "+777", "-5s", "0", "1"),
    "durations": fields("500ms", "4d", " 2h ", "1y", "", ""),
}

def main():
    for target, seeds in SEEDS.items():
        d = os.path.join(HERE, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        for name, data in seeds.items():
            with open(os.path.join(d, name), "wb") as f:
                f.write(data)
    # config: the shipped example and the configs of the README, as they are.
    for target in ["config", "config_schedule"]:
        d = os.path.join(HERE, target)
        shutil.rmtree(d, ignore_errors=True)
        os.makedirs(d)
        shutil.copy(os.path.join(ROOT, "examples", "config.yaml"), os.path.join(d, "example.yaml"))
        for name, text in CONFIGS.items():
            with open(os.path.join(d, name + ".yaml"), "w") as f:
                f.write(text)

CONFIGS = {
    "minimal_oauth2": """credentials:
  - name: idp
    provider: oauth2
    token_url: https://idp.example/token
    client_id: tokend
    client_secret: { env: IDP_SECRET }
    outputs: [ { file: /run/tokend/idp.token } ]
""",
    "issuer_password_grant": """state_dir: /tmp/state
log: { format: json, level: debug }
defaults: { refresh: { at: 75%, jitter: 0%, every: 1h }, retry: { initial: 2s, max: 10m, permanent: 1h }, timeout: 10s }
credentials:
  - name: pw
    provider: oauth2
    issuer: https://idp.example
    grant: password
    username: alice
    password: { file: /run/secrets/pw }
    client_id: app
    auth: none
    scope: "openid profile"
    audience: api
    params: { foo: bar }
    lifetime: 4s
    outputs:
      - { dir: /run/tokend/pw }
      - { file: /run/tokend/pw.env, format: env, env_prefix: PW, mode: 0640 }
""",
    "http_json": """credentials:
  - name: vandar-json
    provider: http_json
    login_request:
      url: "https://api.vandar.io/v2/login"
      body: { mobile: "09123456789", password: "{{password}}" }
    refresh_request:
      url: "https://api.vandar.io/v3/refreshtoken"
      body: { refreshtoken: "{{refresh_token}}" }
    secrets: { password: { file: /run/secrets/vandar } }
    token_pointer: /data/token
    refresh_token_pointer: /refresh_token
    expires_in_pointer: /expires_in
    outputs: [ { file: /run/out/vandar.token, format: template, template: "{{token}}\\n" } ]
""",
    "saba_yavapteke": """credentials:
  - name: saba
    provider: saba
    base_url: http://127.0.0.1:8080
    username: sabauser
    password: saba-pass
    virtual_number: "30001234"
    token_valid_days: 365
    refresh: { at: 50%, jitter: 10% }
    on_refresh: [ { exec: ["/bin/true"], timeout: 5s } ]
    outputs: [ { file: out/saba.token } ]
  - name: pharmacy
    provider: yavapteke
    client_id: 3f37b142-e371-461e-924c-a913ff878534
    client_secret: { credential: yav }
    client_secret_param: secret
    ca_file: /etc/ssl/ca.pem
    outputs: [ { file: /run/out/pharmacy.json, format: json, group: 0 } ]
""",
    "errors": """credentials:
  - name: Bad Name
    provider: vandar
    refresh_tokn: x
    refresh: { at: 120%, every: 0s }
    retry: { initial: 5m, max: 1s }
    outputs: [ { file: a, format: template, template: "{{nope}}" }, { file: a } ]
""",
}

if __name__ == "__main__":
    main()
