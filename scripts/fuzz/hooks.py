"""Schemathesis hooks for scripts/fuzz_api.sh.

Admin forms are refused with 403 before anything else unless they carry
the session's CSRF token, so a fuzzer that guesses the token tests nothing
behind it. This pins the documented `csrf_token` field of every admin form
to the token of the session the fuzzer signs in with (FUZZ_CSRF_TOKEN),
except signing out's, which would end that session.
"""

import os

import schemathesis

TOKEN = os.environ["FUZZ_CSRF_TOKEN"]
KEEP_UNKNOWN = {"/admin/logout"}


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
