"""Schemathesis hooks for scripts/fuzz-api: the server's rules that no JSON Schema can state.

The document says a time may be at most the allowed clock skew ahead of the server's clock,
and that `created_at` is not after `as_of`; a schema has no "now". So in every generated body
each time that is valid by the schema (an RFC 3339 text or an integer in range) and lies in
the future is moved back into the past, and a valid `created_at` after a valid `as_of` is
moved back to it. A webhook endpoint's `url` and `secret` given as text are made valid (see
`_webhook_fields`), and proposed grade bands are put in the order a > b > c
(`_threshold_proposal`). Values that are not valid times are left alone, so a request that was
invalid by the schema stays invalid, and the negative checks still see it.
"""

import base64
import datetime
import os
import random

import schemathesis

EARLIEST_MS = -62_167_305_600_000
LATEST_MS = 253_402_387_199_999


def _now_ms():
    return int(datetime.datetime.now(datetime.timezone.utc).timestamp() * 1000)


def _as_ms(value):
    """Milliseconds of a value valid as a Timestamp, else None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer() and abs(value) < 9e15:
        value = int(value)
    if isinstance(value, int):
        return value if EARLIEST_MS <= value <= LATEST_MS else None
    if isinstance(value, str):
        try:
            parsed = datetime.datetime.fromisoformat(value.replace("z", "Z").replace("Z", "+00:00"))
        except ValueError:
            return None
        if parsed.tzinfo is None or "T" not in value.upper():
            return None
        return int(parsed.timestamp() * 1000)
    return None


def _past(value, now, rng):
    """`value` moved into the past (kept in its own form) when it is a valid future time."""
    ms = _as_ms(value)
    if ms is None or ms <= now:
        return value
    past = now - rng.randrange(0, 400 * 86_400_000)
    if isinstance(value, (int, float)):
        return past
    return datetime.datetime.fromtimestamp(past / 1000, datetime.timezone.utc).isoformat()


def _fix_entity(entity, now, rng):
    if not isinstance(entity, dict):
        return
    for key in ("as_of", "created_at"):
        if key in entity:
            entity[key] = _past(entity[key], now, rng)
    events = entity.get("events")
    if isinstance(events, list):
        for event in events:
            if isinstance(event, dict) and "ts" in event:
                event["ts"] = _past(event["ts"], now, rng)
    created, as_of = _as_ms(entity.get("created_at")), _as_ms(entity.get("as_of"))
    if created is not None and as_of is not None and created > as_of:
        entity["created_at"] = entity["as_of"]


# The store routes keep CRM times and refuse those before 1900 (they answer times as RFC 3339
# text, which has no year before 0000).
STORE_EARLIEST_MS = -2_208_988_800_000
STORE_PATHS = ("/v1/events", "/v1/entities", "/v1/outcomes")


def _not_before_1900(value, rng):
    """`value` moved after 1900 (kept in its own form) when it is a valid earlier time."""
    ms = _as_ms(value)
    if ms is None or ms >= STORE_EARLIEST_MS:
        return value
    later = STORE_EARLIEST_MS + rng.randrange(0, 100 * 365 * 86_400_000)
    if isinstance(value, (int, float)):
        return later
    return datetime.datetime.fromtimestamp(later / 1000, datetime.timezone.utc).isoformat()


def _floor_store_times(body, rng):
    if not isinstance(body, dict):
        return
    if "created_at" in body:
        body["created_at"] = _not_before_1900(body["created_at"], rng)
    for key in ("events", "outcomes"):
        items = body.get(key)
        if isinstance(items, list):
            for item in items:
                if isinstance(item, dict) and "ts" in item:
                    item["ts"] = _not_before_1900(item["ts"], rng)


# `POST /admin/store/export` reads the spec its `like` names on the server's disk: a path the
# schema cannot know. A text `like` is pointed at a spec that exists (FUZZ_LIKE_SPEC).
LIKE_SPEC = os.environ.get("FUZZ_LIKE_SPEC")


# A webhook endpoint's `url` must parse as an http(s) URL of a public host and its `secret`
# must be a Standard Webhooks secret: rules of parsers, not of a schema. A text value is
# replaced by a valid one (a public name under example.com: never reached, as nothing
# resolves here); a value of another type is left, so the negative checks still see it.
def _webhook_fields(path, body, rng):
    if not isinstance(body, dict):
        return
    if path == "/admin/webhooks" and isinstance(body.get("url"), str):
        body["url"] = f"https://hooks-{rng.randrange(10**6)}.example.com/leadscore"
    if path in ("/admin/webhooks", "/admin/webhooks/{id}/rotate") and isinstance(
        body.get("secret"), str
    ):
        key = bytes(rng.randrange(256) for _ in range(32))
        body["secret"] = "whsec_" + base64.b64encode(key).decode()


def _valid_probability(value):
    return isinstance(value, (int, float)) and not isinstance(value, bool) and 0 < value < 1


def _threshold_proposal(path, body):
    """Grade bands valid by the schema (three probabilities) put in the order a > b > c
    that no schema can state (bands with equal values replaced by valid ones); bands with a
    value the schema refuses are left as they are."""
    if not path.startswith(("/v1/thresholds/{model}/preview", "/admin/thresholds/{model}")):
        return
    if not isinstance(body, dict) or not isinstance(body.get("grades"), dict):
        return
    grades = body["grades"]
    if set(grades) == {"a", "b", "c"} and all(_valid_probability(v) for v in grades.values()):
        a, b, c = sorted(grades.values(), reverse=True)
        body["grades"] = {"a": a, "b": b, "c": c} if a > b > c else {"a": 0.75, "b": 0.5, "c": 0.25}


@schemathesis.hook
def map_body(ctx, body):
    now = _now_ms()
    rng = random.Random(now)
    if isinstance(body, dict):
        if isinstance(body.get("entities"), list):
            for entity in body["entities"]:
                _fix_entity(entity, now, rng)
        else:
            # A score request's entity, `PUT`/`PATCH /v1/entities/{id}` (`created_at`) and
            # `POST /v1/events` (`events[*].ts`).
            _fix_entity(body, now, rng)
        outcomes = body.get("outcomes")
        if isinstance(outcomes, list):
            for outcome in outcomes:
                if isinstance(outcome, dict) and "ts" in outcome:
                    outcome["ts"] = _past(outcome["ts"], now, rng)
    path = getattr(getattr(ctx, "operation", None), "path", "") or ""
    if path.startswith(STORE_PATHS):
        _floor_store_times(body, rng)
    _webhook_fields(path, body, rng)
    _threshold_proposal(path, body)
    if path == "/admin/store/export" and LIKE_SPEC and isinstance(body, dict):
        if isinstance(body.get("like"), str):
            body["like"] = LIKE_SPEC
    return body
