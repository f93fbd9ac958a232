"""The flags of the tools that can use a model behind an OpenAI-compatible server (``evaluate``,
``translate``): which server and model, and how requests are sent (`openai_api.ChatClient`).
Call `define` from a CLI module only."""

from __future__ import annotations

from absl import flags

from basque_vlm.runtime.openai_api import ChatClient


def define(instead_of: str) -> None:
    """``--endpoint``, ``--model_name``, ``--api_key_env`` (the model, used instead of
    ``instead_of``) and the request settings ``--max_concurrency``, ``--request_timeout``,
    ``--max_retries``, ``--retry_backoff``."""
    flags.DEFINE_string("endpoint", None, f"Instead of {instead_of}: an OpenAI-compatible "
                        "server's API base (e.g. http://host:8000/v1).")
    flags.DEFINE_string("model_name", None, "The model's name on --endpoint.")
    flags.DEFINE_string("api_key_env", "OPENAI_API_KEY", "Environment variable holding "
                        "--endpoint's API key (unset: no key, as a local server needs).")
    flags.DEFINE_integer("max_concurrency", 8, "Requests in flight at once to each server.",
                         lower_bound=1)
    flags.DEFINE_float("request_timeout", 300, "Seconds a server has to answer one request.",
                       lower_bound=0.001)
    flags.DEFINE_integer("max_retries", 5, "Tries after the first for a request that timed "
                         "out, could not connect, or got HTTP 408, 409, 429 or 5xx.",
                         lower_bound=0)
    flags.DEFINE_float("retry_backoff", 1.0, "Seconds before the first retry; doubled after "
                       "each (at most 60), with jitter.", lower_bound=0)


def client(url: str, model: str, api_key_env: str) -> ChatClient:
    """A client of ``url``'s ``model`` with the request settings of the flags."""
    values = flags.FLAGS
    return ChatClient(url, model, api_key_env=api_key_env, timeout=values.request_timeout,
                      max_retries=values.max_retries, backoff=values.retry_backoff,
                      max_concurrency=values.max_concurrency)
