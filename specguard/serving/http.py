"""Blocking HTTP for functional requests (health, the model list, metrics), with httpx. Never
through a proxy from the environment: the suite talks to servers on 127.0.0.1 (or the URLs given),
as its aiohttp load client does. The measuring path does not come here."""

from __future__ import annotations

from typing import Any

import httpx

HTTPError = httpx.HTTPError   # a connection that fails (TransportError) or an answer that is not 2xx


_client: httpx.Client | None = None


def _shared() -> httpx.Client:
    """One client for the session: building one loads the CA bundle (~46 ms here), which a health
    poll every second of a start-up would otherwise repeat. No keep-alive: the servers polled come
    and go, and a pooled connection to a dead one would fail the next request."""
    global _client
    if _client is None:
        _client = httpx.Client(trust_env=False, limits=httpx.Limits(max_keepalive_connections=0))
    return _client


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def get(url: str, *, api_key: str | None = None, timeout: float = 30.0) -> httpx.Response:
    """The answer, whatever its status (connection failures raise ``HTTPError``)."""
    return _shared().get(url, headers=_auth(api_key), timeout=timeout)


def get_text(url: str, *, api_key: str | None = None, timeout: float = 30.0) -> str:
    """The body of a 2xx answer; any other status raises ``HTTPError``."""
    resp = get(url, api_key=api_key, timeout=timeout)
    resp.raise_for_status()
    return resp.text


def request_json(url: str, payload: dict[str, Any] | None = None, *, api_key: str | None = None,
                 timeout: float = 60.0) -> Any:
    """GET (or POST ``payload``) and decode the JSON of a 2xx answer; any other status raises."""
    resp = _shared().request("GET" if payload is None else "POST", url, json=payload, headers=_auth(api_key),
                             timeout=timeout)
    resp.raise_for_status()
    return resp.json()
