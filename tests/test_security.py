"""Every server the suite starts listens on 127.0.0.1 only and refuses requests without the key."""

import os
import urllib.error
import urllib.request

import psutil
import pytest


def test_server_is_local_and_locked(server_config, specguard, vllm_servers):
    if specguard.options.vllm_urls:
        pytest.skip("--vllm-url: the server is not the suite's")
    server = vllm_servers.get(server_config)
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(f"{server.base_url}/v1/models", timeout=30)
    assert refused.value.code == 401, f"{server_config.name}: a request without the key got {refused.value.code}"
    req = urllib.request.Request(f"{server.base_url}/v1/models",
                                 headers={"Authorization": f"Bearer {specguard.api_key}"})
    with urllib.request.urlopen(req, timeout=30) as ok:
        assert ok.status == 200
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
