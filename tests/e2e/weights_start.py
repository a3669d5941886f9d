"""One worker start of the serve app in its own process (its own Ray), for tests/e2e/test_weights_e2e.py.

    python -m tests.e2e.weights_start SPEC.json

SPEC: {"args": ServeSettings args, "work": dir, "env": extra environment of every Ray process, "wait_for": optional
[bucket, key]}.  Starts the app, asks one chat completion, waits (bounded) until ``wait_for`` exists in S3 (the
replica's background upload) and stops; prints one JSON line (start-up seconds, the reply); a start that fails prints
the error and exits with status 1.  A process of its own because the e2e session may already run a Ray.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.request
from pathlib import Path

from tools.bench_servers import serve_app
from workloads.serve.settings import RAY_SERVE_ENV, ServeSettings


def chat(base_url: str, model: str) -> dict[str, object]:
    body = {"model": model, "messages": [{"role": "user", "content": "the quick brown fox"}], "max_tokens": 8}
    request = urllib.request.Request(
        f"{base_url}/v1/chat/completions",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=120) as r:
        answer: dict[str, object] = json.load(r)
    return answer


UPLOAD_WAIT_S = 120


def wait_for_object(env: dict[str, str], bucket: str, key: str) -> float:
    """Seconds until ``key`` exists in the (fake) S3 the replica writes to; TimeoutError after UPLOAD_WAIT_S."""
    import boto3

    client = boto3.client("s3", endpoint_url=env["AWS_ENDPOINT_URL_S3"], region_name=env["AWS_REGION"])
    started = time.monotonic()
    while time.monotonic() - started < UPLOAD_WAIT_S:
        if client.list_objects_v2(Bucket=bucket, Prefix=key).get("KeyCount", 0):
            return time.monotonic() - started
        time.sleep(0.2)
    raise TimeoutError(f"s3://{bucket}/{key} did not appear within {UPLOAD_WAIT_S}s")


def main(argv: list[str]) -> int:
    spec = json.loads(Path(argv[0]).read_text())
    settings = ServeSettings.from_args(spec["args"])
    started = time.monotonic()
    try:
        with serve_app(settings, Path(spec["work"]), {**RAY_SERVE_ENV, **spec["env"]}) as base_url:
            startup_s = time.monotonic() - started
            answer = chat(base_url, settings.served_model_name)
            upload_s = None
            if spec.get("wait_for"):
                upload_s = wait_for_object(spec["env"], *spec["wait_for"])
    except (RuntimeError, TimeoutError, OSError) as exc:
        print(f"start failed: {exc}", file=sys.stderr)
        return 1
    report = {"startup_s": round(startup_s, 2), "upload_wait_s": upload_s, "model": answer["model"]}
    print(json.dumps({**report, "choices": answer["choices"]}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
