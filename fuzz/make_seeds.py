#!/usr/bin/env python3
"""Writes the committed seed corpus, fuzz/seeds/<target>/, so that it can be
remade or extended: `python3 fuzz/make_seeds.py [path/to/shared/stripe]`.

Events are the real envelopes of shared/stripe/events (minified), plus
trimmed variants that keep only the fields Assay reads, so that mutations
land there. Headers are Stripe-Signature shapes, signed over the payload
`{}` with the secrets the signature target holds. Configs are the example
file, the example environment, and the shapes the tests load.
"""

import hashlib
import hmac
import json
import pathlib
import re
import shutil
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
SEEDS = ROOT / "fuzz" / "seeds"
STRIPE = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT.parent / "shared" / "stripe"

# Must match fuzz_targets/stripe_signature.rs.
OLD, NEW = "whsec_fuzz_old", "whsec_fuzz_new"
T = 1767225600
PAYLOAD = b"{}"


def v1(secret, t=T, payload=PAYLOAD):
    return hmac.new(secret.encode(), f"{t}.".encode() + payload, hashlib.sha256).hexdigest()


def compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


def signature_seeds():
    good = v1(NEW)
    return {
        "single_v1": f"t={T},v1={good}",
        "rolling_two_v1": f"t={T},v1={v1(OLD)},v1={good}",
        "test_mode_v0": f"t={T},v1={good},v0={'6f' * 32}",
        "v0_only": f"t={T},v0={'6f' * 32}",
        "whitespace": f" t={T} , v1={good} ",
        "missing_t": f"v1={good}",
        "two_t": f"t={T},t={T},v1={good}",
        "t_not_integer": f"t=17672256OO,v1={good}",
        "stale": f"t={T - 301},v1={v1(NEW, T - 301)}",
        "garbled_then_good": f"t={T},v1=deadbeef,v1=nothex,v1={good}",
        "uppercase_hex": f"t={T},v1={good.upper()}",
        "wrong_secret": f"t={T},v1={v1('whsec_other')}",
        "trailing_comma": f"t={T},v1={good},",
        "extreme_t": "t=9223372036854775807,v1=00,v1=-1",
        "negative_t": "t=-1,v1=00",
        # The example header of Stripe's documentation.
        "stripe_docs": "t=1492774577,v1=5257a869e7ecebeda32affa62cdca3fa51cad7e77a0e56ff536d0ce8e108d8bd,"
        "v0=6ffbb59b2300aae63f272406069a9788598b792a944a07aba816edb039989a39",
        "empty": "",
        "no_equals": "garbage",
    }


def envelope(event_type, obj, event_id="evt_fuzz_1", **extra):
    event = {"id": event_id, "object": "event", "created": T, "livemode": False,
             "type": event_type, "data": {"object": obj}}
    event.update(extra)
    return compact(event)


def event_seeds():
    seeds = {}
    for path in sorted((STRIPE / "events").glob("*.json")):
        seeds[path.stem] = compact(json.loads(path.read_text()))
    price = "price_1PgafmB7WZ01zgkW6dKueIc5"
    drill = "0190a1b2c3d47e8f9a0b1c2d3e4f5a6b"
    seeds.update({
        "invoice_basil_paths": envelope("invoice.paid", {
            "customer": "cus_1",
            "parent": {"subscription_details": {"subscription": "sub_1"}},
            "lines": {"data": [{"pricing": {"price_details": {"price": price}}}]}}),
        "invoice_old_paths_expanded": envelope("invoice.payment_succeeded", {
            "customer": {"id": "cus_1"}, "subscription": "sub_1",
            "lines": {"data": [{"price": {"id": "price_x", "lookup_key": "lookup_key",
                                          "product": {"id": "prod_QXg1hqf4jFNsqG"}}}]}}),
        "payment_failed_min": envelope("invoice.payment_failed", {
            "customer": "cus_1", "subscription": "sub_1",
            "lines": {"data": [{"plan": {"id": price}}]}}),
        "subscription_past_due": envelope("customer.subscription.updated", {
            "id": "sub_1", "customer": "cus_1", "status": "past_due",
            "items": {"data": [{"price": price}, {"plan": "price_y"}]}}),
        "subscription_paused": envelope("customer.subscription.paused", {
            "id": "sub_1", "customer": "cus_1", "status": "paused",
            "items": {"data": [{"price": {"id": price}}]}}),
        "checkout_async_line_items": envelope("checkout.session.async_payment_succeeded", {
            "customer": {"id": "cus_1"}, "subscription": {"id": "sub_1"},
            "payment_status": "paid", "line_items": {"data": [{"price": {"id": price}}]}}),
        "entitlements_complete": envelope("entitlements.active_entitlement_summary.updated", {
            "customer": "cus_1", "entitlements": {"has_more": False, "data": [
                {"lookup_key": "seats"}, {"lookup_key": "api"}]}}),
        "drill_marked": envelope("customer.subscription.created", {
            "id": "sub_drill", "customer": "cus_drill", "status": "active",
            "metadata": {"assay_drill": "0190a1b2-c3d4-7e8f-9a0b-1c2d3e4f5a6b"},
            "items": {"data": [{"price": price}]}}, event_id=f"evt_assaydrill_{drill}"),
        "nul_in_string": b'{"id":"evt_1","type":"invoice.paid","data":{"object":{"customer":"cus\\u0000"}}}',
        "id_not_string": b'{"id":7,"type":"invoice.paid","data":{"object":{}}}',
        "id_control_char": b'{"id":"evt\\n1","type":"invoice.paid","data":{"object":{}}}',
        "no_data_object": b'{"id":"evt_1","type":"invoice.paid","data":{}}',
        "object_not_object": b'{"id":"evt_1","type":"invoice.paid","data":{"object":[]}}',
        "top_level_array": b'[{"id":"evt_1"}]',
    })
    return seeds


def strip_comments(text):
    return "".join(line + "\n" for line in text.splitlines()
                   if line.strip() and not line.lstrip().startswith("#"))


def config_seeds():
    example = strip_comments((ROOT / "deploy" / "assay.example.toml").read_text())
    env_example = "#nofile\n" + "".join(
        f"#env {line}\n" for line in (ROOT / "deploy" / "assay.env.example").read_text().splitlines()
        if re.match(r"^ASSAY_\w+=", line))
    hook_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    return {
        "example": example,
        "env_example": env_example,
        "tests_base": '[projects.default]\n[projects.other]\napi_key = "other-key-0123456789"\n'
                           'stripe_webhook_secret = "whsec_other"\n',
        "env_overrides_file": '#env ASSAY_BIND=127.0.0.1:9001\n#env ASSAY_API_KEY=env-key-0123456789\n'
                                   '#env ASSAY_PLAN_MAP=price_2=team\nbind = "127.0.0.1:9000"\n'
                                   '[projects.default]\nstripe_webhook_secret = ["whsec_a", "whsec_b"]\n'
                                   'api_key = "file-key-0123456789"\nplan_map = { price_1 = "pro" }\n'
                                   'deadline_reconciled = "30s"\n',
        "every_problem": "#nofile\n#env ASSAY_BIND=nowhere\n#env ASSAY_STRIPE_WEBHOOK_SECRET=sk_live_oops\n"
                              "#env ASSAY_DEADLINE_RECONCILED=soon\n#env ASSAY_SWEEP_SCHEDULE=every minute\n"
                              "#env ASSAY_PLAN_MAP=price_1\n",
        "unknown_key": '[projects.acme]\nstripe_secret = "whsec_x"\n',
        "shared_api_key": '[projects.a]\napi_key = "same-key-0123456789"\n'
                               '[projects.b]\napi_key = "same-key-0123456789"\n',
        "api_key_sha256": '[projects.acme]\napi_key = "acme-key-0123456789"\n[projects.globex]\n'
                               'api_key_sha256 = "5f6cd5f0b1a3d0cf64a1c70a1a2d3e5dfc0b7aa73e2c3a8bf88a8ac2cd5c50a4"\n',
        "project_from_env": "#env ASSAY_PROJECT=acme\n#env ASSAY_API_KEY=key-0123456789abcdef\n[projects.acme]\n",
        "operators": '#env ASSAY_ADMIN_TOKEN=admin-token-0123456789\n[[operators]]\nname = "alice"\n'
                          'token_sha256 = "' + hashlib.sha256(b"alice-token-0123456789").hexdigest() + '"\n'
                          "[projects.default]\n",
        "probe_headers": "#env APP_TOKEN=tok-secret-42\n[projects.default.probe]\n"
                              'url = "http://app.internal:3000/access/{{customer_id}}"\n'
                              'headers = { Authorization = "Bearer ${APP_TOKEN}" }\n'
                              'features_pointer = "/features"\ninterval = "2s"\nmax_interval = "1m"\n',
        "probe_env": "#nofile\n#env ASSAY_PROBE_URL=http://app.internal/access/{{customer_id}}\n"
                          "#env ASSAY_PROBE_ALLOW_HOSTS=10.0.0.0/8,app.internal\n#env ASSAY_PROBE_TIMEOUT=1m\n"
                          "#env ASSAY_PROBE_START=reconciled\n#env ASSAY_PROBE_HEADERS=Authorization=Bearer ${NOT_SET}\n",
        "channels": '[[projects.default.channels]]\nname = "drills"\nkind = "slack"\n'
                         'url = "https://hooks.slack.com/services/T0/B0/x"\ndrill = true\n'
                         '[[projects.default.channels]]\nkind = "email"\n'
                         'smtp_url = "smtp://alerts:pw@mail.internal:587?tls=required"\n'
                         'from = "Assay <assay@example.com>"\nto = ["oncall@example.com"]\n'
                         '[[projects.default.channels]]\nkind = "webhook"\n'
                         f'url = "https://ops.example.com/hooks/assay"\nsecret = "{hook_secret}"\n',
        "grace_and_plans": '[projects.default]\nstripe_webhook_secret = "whsec_a,whsec_b"\n'
                                'plan_map = "price_1=pro,pro_monthly=pro,prod_9=team"\n'
                                'plan_priority = ["team", "pro"]\ngrace_period = "3d 12h"\n'
                                'paused_keeps_access = true\n'
                                '[projects.default.drill]\nschedule = "0 0 4 * * *"\nplan = "pro"\n'
                                'ingest_url = "https://assay.staging.example.com"\n',
        "database_and_sweep": '#env ASSAY_DATABASE_URL=postgres://assay:hunter2@db:5432/assay?sslmode=require\n'
                                   'database_max_connections = 1000\nsweep_schedule = "off"\n'
                                   'sweep_batch_size = 0\nlease_duration = "10s"\nalert_timeout = "10s"\n'
                                   'alert_reminder_interval = "off"\n',
    }


def config_dict():
    """libFuzzer dictionary: the variable names and file keys the loader
    knows, read from its source so the list cannot go stale. A key list
    (`KEYS`, `GLOBAL_KEYS`, `PROJECT_KEYS`) gives each key's variable,
    `ASSAY_<PREFIX><KEY>`."""
    names, keys = set(), set()
    for rel, prefix in [("config/mod.rs", ""), ("config/raw.rs", ""), ("probe/settings.rs", "PROBE_"),
                        ("alert/settings.rs", ""), ("drill/settings.rs", "DRILL_")]:
        text = (ROOT / "src" / rel).read_text()
        names.update(re.findall(r'"(ASSAY_[A-Z_]+)"', text))
        keys.update(re.findall(r"^    pub (\w+): (?:Option|Vec|BTreeMap|Secret|String|RawProbe|RawDrill)\b", text, re.M))
        for listed in re.findall(r"const (?:GLOBAL_KEYS|PROJECT_KEYS|KEYS): \[&str; \d+\] = \[(.*?)\];", text, re.S):
            for key in re.findall(r'"(\w+)"', listed):
                names.add(f"ASSAY_{prefix}{key.upper()}")
                keys.add(key)
    keys.discard("_project_defaults")
    keys.add("project_defaults")
    tokens = [f"\n#env {n}=" for n in sorted(names)] + [f"{k} = " for k in sorted(keys)]
    tokens += ["[projects.default]", "[projects.default.probe]", "[projects.default.drill]",
               "[[projects.default.channels]]", "[[operators]]", "[project_defaults]", "#nofile", "whsec_",
               "postgres://", "sqlite://", "off", "true", "ms", "y", "${"]
    lines = ["".join(f"\\x{b:02x}" if b in b'"\\' or not 32 <= b < 127 else chr(b)
                     for b in t.encode()) for t in tokens]
    (ROOT / "fuzz" / "config_load.dict").write_text("".join(f'"{l}"\n' for l in lines))


def main():
    for target, ext, seeds in [("stripe_signature", ".txt", signature_seeds()),
                               ("stripe_event", ".json", event_seeds()),
                               ("config_load", ".toml", config_seeds())]:
        shutil.rmtree(SEEDS / target, ignore_errors=True)
        (SEEDS / target).mkdir(parents=True)
        for name, data in seeds.items():
            path = SEEDS / target / (name + ext)
            path.write_bytes(data if isinstance(data, bytes) else data.encode())
        print(f"{target}: {len(seeds)} seeds")
    config_dict()


main()
