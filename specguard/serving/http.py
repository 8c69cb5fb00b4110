"""Blocking HTTP for functional requests (health, the model list, metrics), with httpx. Never
through a proxy from the environment: the suite talks to servers on 127.0.0.1 (or the URLs given),
as its aiohttp load client does. The measuring path does not come here."""

from __future__ import annotations

from typing import Any

import httpx

HTTPError = httpx.HTTPError   # a connection that fails (TransportError) or an answer that is not 2xx


def _client(timeout: float) -> httpx.Client:
    return httpx.Client(trust_env=False, timeout=timeout)


def _auth(api_key: str | None) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def get(url: str, *, api_key: str | None = None, timeout: float = 30.0) -> httpx.Response:
    """The answer, whatever its status (connection failures raise ``HTTPError``)."""
    with _client(timeout) as client:
        return client.get(url, headers=_auth(api_key))


def get_text(url: str, *, api_key: str | None = None, timeout: float = 30.0) -> str:
    """The body of a 2xx answer; any other status raises ``HTTPError``."""
    resp = get(url, api_key=api_key, timeout=timeout)
    resp.raise_for_status()
    return resp.text


def request_json(url: str, payload: dict[str, Any] | None = None, *, api_key: str | None = None,
                 timeout: float = 60.0) -> Any:
    """GET (or POST ``payload``) and decode the JSON of a 2xx answer; any other status raises."""
    with _client(timeout) as client:
        resp = (client.get(url, headers=_auth(api_key)) if payload is None
                else client.post(url, json=payload, headers=_auth(api_key)))
    resp.raise_for_status()
    return resp.json()
