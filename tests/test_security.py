"""Every server the suite starts listens on 127.0.0.1 only and refuses requests without the key."""

import os

import psutil
import pytest

from specguard.serving import http


def test_server_is_local_and_locked(server_config, specguard, vllm_servers):
    if specguard.options.vllm_urls:
        pytest.skip("--vllm-url: the server is not the suite's")
    server = vllm_servers.get(server_config)
    refused = http.get(f"{server.base_url}/v1/models", timeout=30).status_code
    assert refused == 401, f"{server_config.name}: a request without the key got {refused}"
    ok = http.get(f"{server.base_url}/v1/models", api_key=specguard.api_key, timeout=30).status_code
    assert ok == 200, f"{server_config.name}: a request with the key got {ok}"
    # The HTTP port must listen on loopback only. (vLLM's internal sockets are vLLM's business;
    # they are reported in the failure message if the API port is wrong.)
    group = os.getpgid(server.proc.pid)
    listening = []
    for p in psutil.process_iter():
        try:
            if os.getpgid(p.pid) == group:
                listening += [c.laddr for c in p.net_connections(kind="inet") if c.status == psutil.CONN_LISTEN]
        except (ProcessLookupError, psutil.Error):
            continue
    if not listening:
        pytest.skip("this system does not let psutil list the server's sockets")
    api = [addr for addr in listening if addr.port == server.port]
    assert api, f"{server_config.name}: nothing listens on port {server.port}; listeners: {listening}"
    assert all(addr.ip == "127.0.0.1" for addr in api), f"{server_config.name}: port {server.port} on {api}"
