"""Three OpenAI-client examples against the serve endpoint: a simple chat, a chat with other sampling parameters and
a streaming chat.

After ``kubectl -n vllm port-forward svc/<rayservice>-serve-svc 8000:8000``::

    export OPENAI_API_KEY="$(eval "$(pulumi stack output servingApiKeyCommand)")"
    python workloads/client/chat.py                       # all three examples
    python workloads/client/chat.py stream --model NousResearch/Meta-Llama-3-8B-Instruct

Base URL: ``--base-url`` or ``OPENAI_BASE_URL`` (default http://localhost:8000/v1).  Model: ``--model`` or
``OPENAI_MODEL``; when neither is given, the first model the endpoint lists.  API key: ``--api-key`` or
``OPENAI_API_KEY``; the serve endpoint answers 401 without it (stack output ``servingApiKeyCommand`` reads it).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from typing import TextIO

from openai import OpenAI

DEFAULT_BASE_URL = "http://localhost:8000/v1"
SYSTEM_PROMPT = "You are a helpful assistant. Answer briefly."


def simple_chat(client: OpenAI, model: str, out: TextIO) -> str:
    """One question, default sampling."""
    response = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "What is AWS Inferentia2 designed for?"},
        ],
        max_tokens=128,
    )
    text = response.choices[0].message.content or ""
    out.write(f"[simple] {text}\n")
    return text


def sampling_chat(client: OpenAI, model: str, out: TextIO) -> str:
    """A multi-turn chat with other sampling parameters (hotter, nucleus-limited, penalised, with a stop string)."""
    response = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Name one benefit of tensor parallelism."},
            {"role": "assistant", "content": "It lets a model larger than one device's memory run across several."},
            {"role": "user", "content": "Give me a second, different one."},
        ],
        temperature=0.9,
        top_p=0.8,
        presence_penalty=0.5,
        frequency_penalty=0.3,
        max_tokens=96,
        stop=["\n\n"],
        seed=7,
    )
    choice = response.choices[0]
    text = choice.message.content or ""
    out.write(f"[sampling] {text} (finish_reason={choice.finish_reason})\n")
    return text


def streaming_chat(client: OpenAI, model: str, out: TextIO) -> str:
    """The answer printed token by token as the server streams it."""
    stream = client.chat.completions.create(
        model=model,
        messages=[
            {"role": "system", "content": SYSTEM_PROMPT},
            {"role": "user", "content": "Write a haiku about Kubernetes."},
        ],
        max_tokens=96,
        temperature=0.7,
        stream=True,
    )
    out.write("[stream] ")
    parts: list[str] = []
    for chunk in stream:
        if chunk.choices and chunk.choices[0].delta.content:
            parts.append(chunk.choices[0].delta.content)
            out.write(chunk.choices[0].delta.content)
            out.flush()
    out.write("\n")
    return "".join(parts)


EXAMPLES: dict[str, Callable[[OpenAI, str, TextIO], str]] = {
    "simple": simple_chat,
    "sampling": sampling_chat,
    "stream": streaming_chat,
}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("example", nargs="?", default="all", choices=[*EXAMPLES, "all"])
    parser.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", DEFAULT_BASE_URL))
    parser.add_argument("--model", default=os.environ.get("OPENAI_MODEL"))
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    parser.add_argument("--api-key", default=os.environ.get("OPENAI_API_KEY"), help="default: $OPENAI_API_KEY")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error(
            "no API key: the serve endpoint asks for one; "
            'export OPENAI_API_KEY="$(eval "$(pulumi stack output servingApiKeyCommand)")" or pass --api-key'
        )
    return args


def main(argv: Sequence[str] | None = None, out: TextIO = sys.stdout) -> int:
    args = parse_args(argv)
    client = OpenAI(
        base_url=args.base_url,
        api_key=args.api_key,
        timeout=args.timeout,
        max_retries=0,
    )
    model = args.model or client.models.list().data[0].id
    out.write(f"model {model} at {args.base_url}\n")
    names = list(EXAMPLES) if args.example == "all" else [args.example]
    for name in names:
        EXAMPLES[name](client, model, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
