"""Sends every Segment call type to weir through Segment's Python SDK
(segment-analytics-python), as a user of that SDK would, with only its
host changed. The plan is shared with send.cjs; tests/tests/segment_sdks.rs
checks what ClickHouse counts."""
import json
import sys
import time

from segment.analytics.client import Client

host, write_key, prefix, tracks = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
pause_ms = int(sys.argv[5]) if len(sys.argv) > 5 else 0
errors = []
client = Client(
    write_key=write_key,
    host=host,
    on_error=lambda e, batch: errors.append(f"{e} ({len(batch)} messages)"),
    upload_size=50,
    upload_interval=0.2,
    max_retries=20,
)
users = [f"{prefix}-u{i}" for i in range(7)]
for i, u in enumerate(users):
    client.identify(user_id=u, traits={"plan": "pro" if i % 2 == 0 else "free",
                                       "email": f"{u}@example.com", "address": {"city": "Oslo"}},
                    message_id=f"{prefix}-identify-{i}")
for i in range(3):
    client.group(user_id=users[i], group_id=f"{prefix}-acme", traits={"name": "Acme", "employees": 40},
                 message_id=f"{prefix}-group-{i}")
client.alias(previous_id=f"{prefix}-anon", user_id=users[0], message_id=f"{prefix}-alias-0")
for i in range(5):
    client.page(anonymous_id=f"{prefix}-anon", name="Home", category="Docs",
                properties={"path": "/"}, message_id=f"{prefix}-page-{i}")
for i in range(4):
    client.screen(user_id=users[1], name="Cart", message_id=f"{prefix}-screen-{i}")
for i in range(tracks):
    client.track(user_id=users[i % 7], event=f"{prefix} Track",
                 properties={"n": i, "cart": {"items": i % 3}}, message_id=f"{prefix}-track-{i}")
    if pause_ms and i % 50 == 49:
        time.sleep(pause_ms / 1000)
client.flush()
client.join()
print(json.dumps({"sdk": "segment-analytics-python", "tracks": tracks, "errors": errors}))
