"""Schemathesis hooks for scripts/fuzz_api.sh.

Admin forms are refused with 403 before anything else unless they carry
the session's CSRF token, so a fuzzer that guesses the token tests nothing
behind it. This pins the documented `csrf_token` field of every admin form
to the token of the session the fuzzer signs in with (FUZZ_CSRF_TOKEN),
except signing out's, which would end that session.

Two routes take an `Authorization` header, each its own kind, which one
`--auth` or `--header` for every request cannot give: /api/v1 an API token
(FUZZ_API_TOKEN, made with the command line), Postmark's webhook its HTTP
Basic credentials (FUZZ_POSTMARK_AUTH, `user:password`). `Credentials`
gives each the one it takes.
"""

import base64
import os

import schemathesis

TOKEN = os.environ["FUZZ_CSRF_TOKEN"]
API_TOKEN = os.environ["FUZZ_API_TOKEN"]
POSTMARK = base64.b64encode(os.environ["FUZZ_POSTMARK_AUTH"].encode()).decode()
KEEP_UNKNOWN = {"/admin/logout"}


# Not cached (`refresh_interval=None`): the credential depends on the
# operation, and neither expires during a run. An operation that takes
# none gets `None`, and schemathesis leaves its headers alone.
@schemathesis.auth(refresh_interval=None)
class Credentials:
    def get(self, case, context):
        path = case.operation.path
        if path.startswith("/api/v1/"):
            return f"Bearer {API_TOKEN}"
        if path == "/webhooks/postmark":
            return f"Basic {POSTMARK}"
        return None

    def set(self, case, data, context):
        case.headers = case.headers or {}
        case.headers["Authorization"] = data


@schemathesis.hook
def before_load_schema(context, raw_schema):
    components = raw_schema.get("components", {}).get("schemas", {})
    for path, item in raw_schema.get("paths", {}).items():
        if not path.startswith("/admin") or path in KEEP_UNKNOWN:
            continue
        post = item.get("post")
        if not post:
            continue
        for media in post.get("requestBody", {}).get("content", {}).values():
            pin_csrf(media.get("schema", {}), components)


def pin_csrf(schema, components):
    """Pins `csrf_token` wherever the form's schema defines it: inline, in a
    named component it refers to, or in one of the parts it combines."""
    ref = schema.get("$ref", "")
    if ref.startswith("#/components/schemas/"):
        schema = components.get(ref.rsplit("/", 1)[-1], {})
    field = schema.get("properties", {}).get("csrf_token")
    if field is not None:
        field.pop("$ref", None)
        field["type"] = "string"
        field["enum"] = [TOKEN]
    for part in schema.get("allOf", []) + schema.get("oneOf", []) + schema.get("anyOf", []):
        pin_csrf(part, components)
