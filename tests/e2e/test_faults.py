"""The fault tier: the serve application (HAProxy ingress, vLLM CPU engine, the API key, the GCS in a TLS Redis as in
prod) under bad input, clients hanging up, overload, a soak, a GCS restart, a killed engine and a killed replica.

Each case prints one ``faults:`` line with its figures and asserts bounds, explained beside each constant.  The cases
run in file order on one server: the destructive ones last, each waiting for recovery before the next.  Every loop is
bounded in count and time; nothing leaves 127.0.0.1.  ``make faults`` runs it; docs/failure-modes.md has the figures.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from . import load
from .conftest import Endpoint

pytestmark = [
    pytest.mark.faults,
    # Ray Serve's own pydantic models use deprecated Field arguments; not ours to fix.
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]

# The tiny settings (tools/bench_servers.tiny_settings): 16 sequences per batch, so a replica admits
# max_ongoing_requests 32 (handed to vLLM) + max_queued_requests 16 (waiting in the replica) = 48 requests at once.
ADMITTED = 48
LONG = 900  # output tokens of a stream that is still running when a fault hits it (context 1024)

# Bad input: the answer must come before anything is generated.  vLLM answered every case in <= 25 ms when probed
# through the serve app; 2 s leaves room for a loaded 2-core CI machine and still fails a request that queued.
BAD_INPUT_ANSWER_S = 2.0
# Hang-ups: vLLM aborts a request when its client disconnects, at the next engine step.  Running and waiting
# requests must be back to 0 within 10 s (a step is milliseconds; the rest is a busy machine).
ABORTED_WITHIN_S = 10.0
# After the hang-ups the next requests are "as fast as before": TTFT p50 within 1.5x of the baseline plus 100 ms of
# scheduling noise on a shared machine (a leaked request or block would add whole batches: seconds).
TTFT_RATIO, TTFT_SLACK_S = 1.5, 0.1
# Overload at 4x what a replica admits: at most 2x ADMITTED may be served (slots free up while the burst arrives),
# so at least half is refused, each with 429 and Retry-After, and every refusal comes before the admitted requests'
# median first token (a refusal costs no engine time; queueing it would have cost whole generations).
OVERLOAD = 4 * ADMITTED
MIN_REFUSAL_RATE = 0.5
# A request over the limit, sent alone while the replica is full, is refused within 1 s: the refusal is decided in
# the replica before any engine work (measured: tens of ms), against seconds for an admitted first token.
PROBES, REFUSAL_S = 5, 1.0
# The admitted requests' TTFT p99: the last admitted waits about two generations of 64 tokens at batch 16 on two
# cores; 30 s is ~5x what this machine measured and bounds "queued without limit" (the 144 refused requests alone
# would add three more batches each).
ADMITTED_TTFT_P99_S = 30.0
# Soak: SOAK_S seconds (bounded; default 150: a 30 s warm-up, then a first and a last minute) of a closed loop of
# SOAK_CLIENTS clients.  After a 30 s warm-up the
# replica's processes (actor, engine core, CPU worker: ~3 GB, 1 GiB of it the KV cache, allocated at start) may grow
# by at most 128 MiB (a leak of a few KB per request over the ~2,000 requests of the run would show), and the last
# minute's TTFT p95 must be within 1.5x (+50 ms) of the first minute's.
SOAK_S = float(os.environ.get("SOAK_S", "150"))
SOAK_CLIENTS = 4
SOAK_WARMUP_S = 30.0
SOAK_RSS_GROWTH_MIB = 128.0
SOAK_TTFT_RATIO, SOAK_TTFT_SLACK_S = 1.5, 0.05
# GCS restart: the GCS is down for GCS_DOWN_S; every request in and after the outage must succeed (the data path,
# HAProxy -> replica, does not touch the GCS), and Serve must report RUNNING again within 60 s of the restart.
GCS_DOWN_S = 10.0
# A killed engine or replica: in-flight streams must end (with an error the client can read) within 30 s, not
# hang; serving must be back within the time Serve takes to notice (3 failed health checks, 10 s apart, plus the
# check's timeout) plus a fresh replica start, bounded by twice this server's own start-up time.
STREAM_END_S = 30.0
DETECTION_S = 3 * 10 + 60


def report(case: str, **figures: Any) -> None:
    shown = ", ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in figures.items())
    print(f"\nfaults: {case}: {shown}")


RETRIES = 5  # a client refused with 429 waits Retry-After and tries again, at most this many times


def burst(
    endpoint: Endpoint, n: int, max_tokens: int, *, limit: int | None = None, retry: bool = False, **kw: Any
) -> list[load.Result]:
    """``n`` streamed chats at once (or at most ``limit`` at a time); ``retry``: as OpenAI clients do on 429."""

    async def go() -> list[load.Result]:
        gate = asyncio.Semaphore(limit or n)
        async with load.client(endpoint.base_url, endpoint.api_key, connections=max(n, 8)) as c:

            async def one(i: int) -> load.Result:
                async with gate:
                    for attempt in range(RETRIES + 1):
                        r = await load.stream_chat(c, endpoint.model, f"request {i} on neuron", max_tokens, **kw)
                        r.attempts = attempt + 1
                        if not (retry and r.status == 429):
                            break
                        await asyncio.sleep(float(r.headers.get("retry-after", "1")))
                    return r

            return await asyncio.gather(*[one(i) for i in range(n)])

    return asyncio.run(go())


def succeeds(endpoint: Endpoint, seen: list[str] | None = None) -> Callable[[], bool]:
    """A probe request; ``seen`` collects what each probe got (a status, or the exception's name)."""
    import httpx

    def probe() -> bool:
        try:
            r = httpx.post(
                f"{endpoint.openai_url}/chat/completions",
                headers={"Authorization": f"Bearer {endpoint.api_key}"},
                json=load.chat_body(endpoint.model, "are you back", 4, stream=False),
                timeout=10,
            )
        except httpx.HTTPError as exc:
            if seen is not None:
                seen.append(type(exc).__name__)
            return False
        if seen is not None:
            seen.append(str(r.status_code))
        return r.status_code == 200

    return probe


def ttft_p50(endpoint: Endpoint, n: int = 8) -> float:
    results = burst(endpoint, n, 16)
    assert all(r.finished for r in results), [r.error or r.status for r in results]
    return load.percentile([r.ttft_s or 0.0 for r in results], 50)


# --- bad input ----------------------------------------------------------------------------------------------------

TOO_LONG = " ".join(["neuron"] * 3000)  # > 1024 tokens of context
BAD_INPUT: list[tuple[str, Any, int, str]] = [
    # (case, request body (dict, or raw bytes), expected status, a word the message must contain)
    ("prompt longer than the context", {"messages": [{"role": "user", "content": TOO_LONG}]}, 400, "context"),
    ("max_tokens beyond the context", {"max_tokens": 5000}, 400, "max"),
    ("malformed JSON", b'{"model": "tiny-llama", "messages": [', 400, "json"),
    ("unknown model", {"model": "no-such-model"}, 404, "model"),
    ("empty messages", {"messages": []}, 400, "message"),
    ("a body of several MB", {"messages": [{"role": "user", "content": "x" * (4 * 2**20)}]}, 400, "context"),
    ("negative temperature", {"temperature": -1}, 400, "temperature"),
    ("non-numeric temperature", {"temperature": "hot"}, 400, "temperature"),
    ("negative max_tokens", {"max_tokens": -5}, 400, "max_tokens"),
]


def test_bad_input_gets_a_4xx_naming_the_problem_then_a_success(fault_endpoint: Endpoint) -> None:
    import httpx

    e = fault_endpoint
    headers = {"Authorization": f"Bearer {e.api_key}", "Content-Type": "application/json"}
    slowest = 0.0
    with httpx.Client(base_url=e.base_url, headers=headers, timeout=60) as c:
        for case, change, status, word in BAD_INPUT:
            if isinstance(change, bytes):
                body = change
            else:
                base = {"model": e.model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}
                body = json.dumps({**base, **change}).encode()
            started = time.monotonic()
            r = c.post("/v1/chat/completions", content=body)
            took = time.monotonic() - started
            slowest = max(slowest, took)
            assert r.status_code == status, (case, r.status_code, r.text[:300])
            message = json.dumps(r.json()).lower()
            assert word in message, (case, message[:300])
            assert took <= BAD_INPUT_ANSWER_S, (case, took)
            ok = c.post("/v1/chat/completions", json=load.chat_body(e.model, "still serving?", 4, stream=False))
            assert ok.status_code == 200, (case, ok.text[:300])
    report("bad input", cases=len(BAD_INPUT), slowest_answer_s=slowest, bound_s=BAD_INPUT_ANSWER_S)


# --- clients hanging up ---------------------------------------------------------------------------------------------


def test_clients_hanging_up_mid_stream_free_the_engine(fault_endpoint: Endpoint) -> None:
    e = fault_endpoint
    before = ttft_p50(e)
    aborted_before = load.metric(e.base_url, "vllm:request_success_total", finished_reason="abort")
    # 100 clients, at most 24 at a time (half of what a replica admits), each hanging up after two tokens of a
    # 900-token answer.  A hung-up request holds its slot until the replica notices the disconnect, so a client may
    # still be refused (429) and then retries, as OpenAI clients do.
    results = burst(e, 100, LONG, limit=24, retry=True, hang_up_after=2)
    assert [r.status for r in results] == [200] * 100, [r.status for r in results]
    assert all(r.error == "hung up" for r in results), {r.error for r in results}
    hung_up_at = time.monotonic()

    def idle() -> bool:
        m = load.metrics(e.base_url)
        return m.get("vllm:num_requests_running", 1) == 0 and m.get("vllm:num_requests_waiting", 1) == 0

    freed_s = load.wait_for(idle, ABORTED_WITHIN_S, every_s=0.2)
    m = load.metrics(e.base_url)
    aborted = load.metric(e.base_url, "vllm:request_success_total", finished_reason="abort") - aborted_before
    after = ttft_p50(e)
    report(
        "hang-ups",
        clients=100,
        refused_then_retried=sum(r.attempts - 1 for r in results),
        engine_aborted=int(aborted),
        engine_idle_after_s=freed_s if freed_s is not None else -1.0,
        kv_cache_usage=m.get("vllm:kv_cache_usage_perc", -1.0),
        generated_tokens_saved=100 * LONG - int(m.get("vllm:generation_tokens_total", 0)),
        ttft_p50_before_s=before,
        ttft_p50_after_s=after,
        waited_s=time.monotonic() - hung_up_at,
    )
    assert freed_s is not None, f"requests still running or waiting {ABORTED_WITHIN_S}s after the hang-ups: {m}"
    assert aborted == 100, "the engine did not abort every hung-up request"
    assert m["vllm:kv_cache_usage_perc"] == 0.0, "KV-cache blocks still held after every request ended"
    # Each request stopped near its hang-up: far fewer tokens than 100 full answers were generated.
    assert m["vllm:generation_tokens_total"] < 100 * LONG / 2
    assert after <= before * TTFT_RATIO + TTFT_SLACK_S, (before, after)


# --- overload -------------------------------------------------------------------------------------------------------


def test_overload_is_refused_quickly_with_a_retryable_status(fault_endpoint: Endpoint) -> None:
    import httpx

    e = fault_endpoint
    # Besides the burst's own refusals (timed by a client that is itself busy with 192 streams), a separate client
    # sends a few requests once the replica is full and times each refusal alone.
    probes: list[tuple[int, float]] = []

    def probe() -> None:
        time.sleep(1.5)
        with httpx.Client(base_url=e.base_url, headers={"Authorization": f"Bearer {e.api_key}"}, timeout=30) as c:
            for _ in range(PROBES):
                started = time.monotonic()
                r = c.post("/v1/chat/completions", json=load.chat_body(e.model, "one more", 8, stream=False))
                probes.append((r.status_code, time.monotonic() - started))

    prober = threading.Thread(target=probe, daemon=True)
    prober.start()
    results = burst(e, OVERLOAD, 64)
    prober.join(timeout=60)
    admitted = [r for r in results if r.status == 200]
    refused = [r for r in results if r.status == 429]
    assert len(admitted) + len(refused) == OVERLOAD, {r.status for r in results} - {200, 429}
    assert all(r.finished for r in admitted), [r.error for r in admitted if not r.finished][:3]
    refusal_rate = len(refused) / OVERLOAD
    refused_p99 = load.percentile([r.elapsed_s for r in refused], 99) if refused else float("nan")
    ttfts = [r.ttft_s or 0.0 for r in admitted]
    report(
        "overload",
        requests=OVERLOAD,
        admitted=len(admitted),
        refused=len(refused),
        refusal_rate=refusal_rate,
        refused_answer_p99_s=refused_p99,
        probe_statuses="/".join(str(c) for c, _ in probes),
        probe_refusal_max_s=max((t for c, t in probes if c == 429), default=float("nan")),
        admitted_ttft_p50_s=load.percentile(ttfts, 50),
        admitted_ttft_p99_s=load.percentile(ttfts, 99),
    )
    assert refusal_rate >= MIN_REFUSAL_RATE
    assert [c for c, _ in probes] == [429] * PROBES
    assert max(t for _, t in probes) <= REFUSAL_S
    assert all(r.headers.get("retry-after") == "2" and "backpressure" in r.body for r in refused)
    assert refused_p99 <= load.percentile(ttfts, 50), "refusals were not quicker than an admitted first token"
    assert load.percentile(ttfts, 99) <= ADMITTED_TTFT_P99_S


# --- soak -------------------------------------------------------------------------------------------------------


def test_soak_no_errors_bounded_memory_steady_latency(fault_endpoint: Endpoint) -> None:
    e = fault_endpoint
    samples: list[tuple[float, float]] = []  # (seconds since start, replica tree RSS MiB)
    results: list[tuple[float, load.Result]] = []
    started = time.monotonic()
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(5.0):
            samples.append((time.monotonic() - started, load.rss_mib(load.replica_processes())))

    async def clients() -> None:
        async with load.client(e.base_url, e.api_key, connections=SOAK_CLIENTS) as c:

            async def loop(k: int) -> None:
                i = 0
                while time.monotonic() - started < SOAK_S:
                    at = time.monotonic() - started
                    results.append((at, await load.stream_chat(c, e.model, f"soak {k}-{i} ray serve", 64)))
                    i += 1

            await asyncio.gather(*[loop(k) for k in range(SOAK_CLIENTS)])

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        asyncio.run(clients())
    finally:
        stop.set()
        sampler.join(timeout=10)
    errors = [r for _, r in results if not r.finished]
    warm = [rss for t, rss in samples if t >= SOAK_WARMUP_S]
    growth = warm[-1] - warm[0] if len(warm) >= 2 else float("nan")
    window = min(60.0, (SOAK_S - SOAK_WARMUP_S) / 2)
    first = [r.ttft_s or 0.0 for t, r in results if SOAK_WARMUP_S <= t < SOAK_WARMUP_S + window]
    last = [r.ttft_s or 0.0 for t, r in results if t >= SOAK_S - window]
    report(
        "soak",
        seconds=SOAK_S,
        requests=len(results),
        errors=len(errors),
        rss_after_warmup_mib=warm[0] if warm else float("nan"),
        rss_growth_mib=growth,
        ttft_p95_first_s=load.percentile(first, 95),
        ttft_p95_last_s=load.percentile(last, 95),
        window_s=window,
    )
    assert not errors, [r.error or r.status for r in errors][:5]
    assert len(warm) >= 2 and growth <= SOAK_RSS_GROWTH_MIB
    assert load.percentile(last, 95) <= load.percentile(first, 95) * SOAK_TTFT_RATIO + SOAK_TTFT_SLACK_S


# --- the head's GCS restarts ----------------------------------------------------------------------------------


def test_gcs_restart_with_its_state_in_redis_keeps_serving(fault_endpoint: Endpoint) -> None:
    import httpx
    import ray
    from ray import serve
    from ray.serve.schema import ApplicationStatus

    e = fault_endpoint
    assert e.redis is not None
    node = ray._private.worker._global_node
    statuses: list[str] = []
    stop = threading.Event()

    def requests() -> None:
        with httpx.Client(base_url=e.base_url, headers={"Authorization": f"Bearer {e.api_key}"}, timeout=30) as c:
            while not stop.is_set():
                try:
                    r = c.post("/v1/chat/completions", json=load.chat_body(e.model, "during", 8, stream=False))
                    statuses.append(str(r.status_code))
                except httpx.HTTPError as exc:
                    statuses.append(type(exc).__name__)
                stop.wait(0.2)

    client = threading.Thread(target=requests, daemon=True)
    client.start()
    try:
        time.sleep(2)
        killed = time.monotonic()
        node.kill_gcs_server()
        time.sleep(GCS_DOWN_S)
        during = len(statuses)
        node.start_gcs_server()
        restarted = time.monotonic()

        def running() -> bool:
            return serve.status().applications["llm"].status == ApplicationStatus.RUNNING

        back_s = load.wait_for(running, 60, every_s=1.0)
        time.sleep(3)
    finally:
        stop.set()
        client.join(timeout=60)
    failed = [s for s in statuses if s != "200"]
    report(
        "GCS restart",
        gcs_down_s=restarted - killed,
        requests=len(statuses),
        during_outage=during,
        failed=len(failed),
        serve_running_again_s=back_s if back_s is not None else -1.0,
    )
    assert during > 0 and not failed, failed[:5]
    assert back_s is not None


# --- the engine, then the replica, killed mid-stream ------------------------------------------------------------


def _kill_mid_stream(e: Endpoint, kill: Callable[[], None]) -> tuple[list[load.Result], float, float, list[str]]:
    """Eight long streams, ``kill()`` once they stream; returns them, when each ended, recovery and what came."""

    async def go() -> tuple[list[load.Result], float]:
        async with load.client(e.base_url, e.api_key) as c:
            tasks = [
                asyncio.create_task(load.stream_chat(c, e.model, f"long {i}", LONG, timeout_s=STREAM_END_S + 60))
                for i in range(8)
            ]
            await asyncio.sleep(1.0)
            at = time.monotonic()
            kill()
            return list(await asyncio.gather(*tasks)), at

    results, killed_at = asyncio.run(go())
    ended_s = max(r.elapsed_s for r in results)  # upper bound on the time from the kill
    seen: list[str] = []
    recovered = load.wait_for(succeeds(e, seen), DETECTION_S + 2 * e.startup_s + 60, every_s=2.0)
    recovery_s = time.monotonic() - killed_at if recovered is not None else float("inf")
    return results, ended_s, recovery_s, seen


def _counts(seen: list[str]) -> str:
    return " ".join(f"{k}x{seen.count(k)}" for k in sorted(set(seen)))


def test_engine_killed_mid_stream_ends_streams_and_the_replica_is_replaced(fault_endpoint: Endpoint) -> None:
    e = fault_endpoint
    (engine,) = load.engine_processes()
    results, ended_s, recovery_s, seen = _kill_mid_stream(e, engine.kill)
    engines = load.engine_processes()
    report(
        "engine killed",
        streams=len(results),
        streams_ended_within_s=ended_s,
        recovery_s=recovery_s,
        start_up_s=e.startup_s,
        recovery_bound_s=DETECTION_S + 2 * e.startup_s,
        client_saw=sorted({r.error.split(":")[0] for r in results}),
        meanwhile=_counts(seen),
    )
    assert all(not r.finished and r.error for r in results), [(r.finished, r.error) for r in results]
    assert all("EngineCore" in r.error or "Error" in r.error for r in results), [r.error for r in results]
    # Until the replica is replaced, new requests are told so (503 + Retry-After from the gate), not a bare 500.
    assert "500" not in seen, seen
    assert ended_s <= STREAM_END_S
    assert recovery_s <= DETECTION_S + 2 * e.startup_s
    assert [p.pid for p in engines] != [engine.pid] and len(engines) == 1


def test_replica_killed_mid_stream_ends_streams_and_a_new_one_serves(fault_endpoint: Endpoint) -> None:
    import psutil
    import ray

    e = fault_endpoint
    # The replica the previous case replaced may still be stopping: wait until one replica (and engine) is left.
    assert load.wait_for(lambda: len(load.replica_names()) == 1 and len(load.engine_processes()) == 1, 120)
    (engine,) = load.engine_processes()
    name = load.replica_actor_name()
    results, ended_s, recovery_s, seen = _kill_mid_stream(
        e, lambda: ray.kill(ray.get_actor(name, namespace="serve"), no_restart=True)
    )
    orphan = psutil.pid_exists(engine.pid) and engine.is_running()
    engines = load.engine_processes()
    report(
        "replica killed",
        streams=len(results),
        streams_ended_within_s=ended_s,
        recovery_s=recovery_s,
        recovery_bound_s=DETECTION_S + 2 * e.startup_s,
        old_engine_left_running=orphan,
        client_saw=sorted({r.error.split(":")[0] for r in results}),
        meanwhile=_counts(seen),
    )
    assert all(not r.finished and r.error for r in results), [(r.finished, r.error) for r in results]
    assert ended_s <= STREAM_END_S
    assert recovery_s <= DETECTION_S + 2 * e.startup_s
    assert not orphan, "the killed replica's engine is still running (an orphan holding its KV cache and CPU)"
    assert len(engines) == 1 and load.replica_actor_name() != name
