"""The API key is itself where it is used and '***' where it is shown."""

from __future__ import annotations

import dataclasses
import json

from _pytest._io.saferepr import saferepr

from specguard.serving.pool import ServerPool
from specguard.serving.secret import Secret, secret


def test_a_secret_is_its_value_in_use_and_masked_when_shown(tmp_path) -> None:
    key = secret("sg-key-123")
    assert isinstance(key, Secret) and key == "sg-key-123"
    assert f"Bearer {key}" == "Bearer sg-key-123" and {"VLLM_API_KEY": key}["VLLM_API_KEY"] == "sg-key-123"
    assert repr(key) == "'***'" and saferepr(key) == "'***'"   # what pytest prints for a frame's arguments
    pool = ServerPool(log_dir=tmp_path, api_key=key)
    assert "sg-key-123" not in repr(pool) and "api_key='***'" in repr(pool)
    assert "sg-key-123" not in repr(dataclasses.replace(pool))
    assert json.loads(json.dumps({"k": key})) == {"k": "sg-key-123"}   # still a str


def test_no_key_stays_none() -> None:
    assert secret(None) is None and secret("") is None
