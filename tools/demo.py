"""``make demo``: chat with the stack's serving path on this machine, in a browser.

    python -m tools.demo [--model tiny | <Hugging Face id>] [--port 8080] [--webui-venv venv-webui]

Starts the project's Ray Serve application (``workloads.serve.app``, what the RayService runs) on the vLLM CPU engine
and Open WebUI (the image's release, ``tools.webui_local``) with the environment the rendered dev Deployment sets,
both on 127.0.0.1. Prints the URL and the admin account it created, then runs until Ctrl-C (or SIGTERM) and stops
both. The default model is the e2e tier's tiny random Llama, built offline (it answers with random words: the point
is the path, not the text); ``--model`` with a Hugging Face id of a small instruct model downloads it once into
``build/demo/models`` (this needs the internet) and serves that instead. Run in venv-e2e (Ray, vLLM, the render).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from tools import webui_local
from tools.bench_servers import serve_app, tiny_settings
from workloads import openwebui, rayservice
from workloads.serve.settings import API_KEY_ENV, ServeSettings

ROOT = Path(__file__).resolve().parents[1]
MODELS_DIR = ROOT / "build" / "demo" / "models"
LOG = ROOT / "build" / "demo" / "open-webui.log"
TINY = "tiny"
SUGGESTED = "Qwen/Qwen2.5-0.5B-Instruct"
ADMIN_NAME = "Demo Admin"
ADMIN_EMAIL = "admin@example.com"


def real_model_settings(model_dir: Path, name: str) -> ServeSettings:
    """The e2e tier's CPU engine settings (float32: any x86 CPU) with 4 sequences of 4096 tokens."""
    return dataclasses.replace(tiny_settings(model_dir, name, require_api_key=True), max_model_len=4096, max_num_seqs=4)


def download(model_id: str) -> Path:
    """The model's files under ``build/demo/models`` (downloaded once; the serve app itself runs offline)."""
    from huggingface_hub import snapshot_download

    target = MODELS_DIR / model_id.replace("/", "--")
    print(f"downloading {model_id} into {target} (once)", flush=True)
    snapshot_download(model_id, local_dir=target, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"])
    return target


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=TINY, help=f"'{TINY}' (offline) or a Hugging Face id, e.g. {SUGGESTED}")
    parser.add_argument("--port", type=int, default=8080, help="Open WebUI's port on 127.0.0.1")
    parser.add_argument("--webui-venv", type=Path, default=webui_local.DEFAULT_VENV)
    args = parser.parse_args(argv)

    from tools.render import render

    try:
        webui_local.check_venv(args.webui_venv.resolve())
    except webui_local.WebUIError as exc:
        print(exc, file=sys.stderr)
        return 2
    # Ctrl-C (also when started with SIGINT ignored, as a background job) and SIGTERM stop the same way.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="demo-", dir="/tmp"))  # short: Ray's socket paths are limited
    password = secrets.token_urlsafe(12)
    api_key = secrets.token_urlsafe(32)  # the endpoint asks for a key, as in the cluster (the UI sends it)
    try:
        if args.model == TINY:
            tiny_model = importlib.import_module("tests.e2e.tiny_model")
            print("building the tiny offline model", flush=True)
            settings = tiny_settings(tiny_model.build(work / "model"), "tiny-llama", require_api_key=True)
        else:
            settings = real_model_settings(download(args.model), args.model)
        dev = render("dev")
        print("starting the serve app (Ray Serve + vLLM CPU engine); the first start takes a minute or two", flush=True)
        with serve_app(settings, work, extra_env={API_KEY_ENV: api_key}) as serve_url:
            env = webui_local.local_env(
                webui_local.container(dev)["env"],
                openai_url=f"{serve_url}/v1",
                data_dir=work / "webui" / "data",
                home=work / "webui" / "home",
                port=args.port,
                secrets={
                    (openwebui.SECRET_NAME, openwebui.SECRET_KEY): secrets.token_urlsafe(32),
                    (rayservice.API_KEY_SECRET, rayservice.API_KEY_SECRET_KEY): api_key,
                },
                # Open WebUI creates this admin account at start (no one has to sign up first).
                extra={
                    "WEBUI_ADMIN_EMAIL": ADMIN_EMAIL,
                    "WEBUI_ADMIN_PASSWORD": password,
                    "WEBUI_ADMIN_NAME": ADMIN_NAME,
                },
            )
            print("starting Open WebUI", flush=True)
            log = LOG  # outside the work directory, which goes at exit
            log.parent.mkdir(parents=True, exist_ok=True)
            log.unlink(missing_ok=True)
            with webui_local.serve(env, webui_local.probe_paths(dev), log, args.webui_venv.resolve()) as ui:
                print(
                    f"\nOpen WebUI: {ui.url}\n  sign in as {ADMIN_EMAIL} / {password}\n"
                    f"  model: {settings.served_model_name}  (OpenAI API: {serve_url}/v1, key {api_key})\n"
                    f"  log: {log}\nCtrl-C stops both.\n",
                    flush=True,
                )
                while ui.process.poll() is None:  # until Ctrl-C / SIGTERM
                    time.sleep(1)
                print(f"Open WebUI exited with {ui.process.returncode}; see {log}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        print("\nstopping", flush=True)
    except (webui_local.WebUIError, RuntimeError, TimeoutError) as exc:
        print(exc, file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("stopped", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
