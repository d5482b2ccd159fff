"""Verifies an outbound webhook with the official Standard Webhooks library,
so that our signing is held against the spec's own code.

    verify_webhook.py SECRET BODY_FILE WEBHOOK_ID WEBHOOK_TIMESTAMP WEBHOOK_SIGNATURE
        -> prints ok, or fails
"""
import sys

from standardwebhooks.webhooks import Webhook


def main() -> int:
    secret, path, msg_id, timestamp, signature = sys.argv[1:6]
    with open(path, "rb") as f:
        body = f.read()
    Webhook(secret).verify(
        body,
        {"webhook-id": msg_id, "webhook-timestamp": timestamp, "webhook-signature": signature},
    )
    print("ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
