"""Signs and verifies Stripe webhook payloads with Stripe's official Python SDK.

Used by tests/it/stripe_sdk.rs so that our signature check is held against
Stripe's own code, not only against itself.

    stripe_sdk.py sign SECRET PAYLOAD_FILE [TIMESTAMP]   -> prints the header
    stripe_sdk.py verify SECRET PAYLOAD_FILE HEADER      -> prints ok, or fails
"""
import sys

import stripe


def main() -> int:
    mode, secret, path = sys.argv[1:4]
    with open(path, encoding="utf-8") as f:
        payload = f.read()
    if mode == "sign":
        timestamp = int(sys.argv[4]) if len(sys.argv) > 4 else None
        print(stripe.WebhookSignature.generate_signature_header(payload, secret, timestamp=timestamp))
        return 0
    if mode == "verify":
        stripe.WebhookSignature.verify_header(payload, sys.argv[4], secret, tolerance=300)
        print("ok")
        return 0
    print(f"unknown mode {mode}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
