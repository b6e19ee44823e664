"""Verifies webhook requests with the Standard Webhooks reference verifier (PyPI
`standardwebhooks`), not with leadscore's own code.

    python verify_webhooks.py SECRET REQUESTS.jsonl

Each line of REQUESTS.jsonl is one request as received: {"id", "timestamp", "signature",
"body"}. Prints {"verified": n}; fails on the first request that does not verify. A copy of
the first request with its body changed must fail, or the check proves nothing.
"""

import json
import sys

from standardwebhooks.webhooks import Webhook, WebhookVerificationError


def main() -> None:
    secret, path = sys.argv[1], sys.argv[2]
    hook = Webhook(secret)
    verified = 0
    first = None
    with open(path, encoding="utf-8") as lines:
        for n, line in enumerate(lines, 1):
            r = json.loads(line)
            headers = {
                "webhook-id": r["id"],
                "webhook-timestamp": r["timestamp"],
                "webhook-signature": r["signature"],
            }
            try:
                payload = hook.verify(r["body"], headers)
            except WebhookVerificationError as e:
                sys.exit(f"{path}:{n}: message {r['id']} does not verify: {e}")
            if payload != json.loads(r["body"]):
                sys.exit(f"{path}:{n}: the verified payload differs from the body")
            verified += 1
            first = first or (r, headers)
    if first is not None:
        r, headers = first
        try:
            hook.verify(r["body"].replace("}", " }", 1), headers)
        except WebhookVerificationError:
            pass
        else:
            sys.exit("a changed body verified: the check proves nothing")
    print(json.dumps({"verified": verified}))


if __name__ == "__main__":
    main()
