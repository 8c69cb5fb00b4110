"""specguard.serving.inflate: the exactness rule, the registered builtin, and a real check on the CPU that an
inflated SmolLM2-135M gives the same greedy tokens and (to rounding) the same logits.

The real check inflates to hidden 2304 (f = 4, norm weights × 1/2) and MLP 3072, adds one
zero-contribution layer, and keeps the first 4 layers of both models (exactness is per layer; the
full 30 layers would not fit the CPU budget of a unit test). Set SPECGUARD_INFLATE_LAYERS=30 to
run it on the whole model (~3.5 GB of float32, minutes of CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specguard.config.errors import SpecguardError
from specguard.serving.inflate import BASE_HIDDEN, SPARSE_BLOCK, Inflation, InflationError, inflate_folder, write_sparse
from specguard.serving.model import BUILTINS, InflatedModel, ModelError, cache_root, resolve_model, verify_folder

PROMPTS = [
    "The capital of France is",
    "def fibonacci(n):\n    ",
    "Speculative decoding speeds up inference because",
]
NEW_TOKENS = 16


# --- sparse shards ------------------------------------------------------------------------------

def _pieces() -> st.SearchStrategy[bytes]:
    """Bytes made of zero runs and random runs, of lengths around the block size."""
    run = st.one_of(st.integers(0, 3 * SPARSE_BLOCK).map(bytes),
                    st.binary(min_size=1, max_size=SPARSE_BLOCK + 7))
    return st.lists(run, max_size=6).map(b"".join)


@settings(max_examples=60, deadline=None)
@given(data=_pieces())
def test_a_sparse_file_reads_back_byte_for_byte(data: bytes, tmp_path_factory: pytest.TempPathFactory) -> None:
    path = tmp_path_factory.mktemp("sparse") / "f"
    written = write_sparse(path, data)
    assert path.read_bytes() == data
    assert written <= len(data)


def test_only_the_blocks_with_a_nonzero_byte_are_written(tmp_path: Path) -> None:
    b = SPARSE_BLOCK
    data = bytes(b) + b"x" + bytes(2 * b - 1) + bytes(3 * b) + b"tail"   # blocks: 0, x, 0, 0, 0, 0, tail
    assert write_sparse(tmp_path / "f", data) == b + 4
    assert (tmp_path / "f").read_bytes() == data
    assert write_sparse(tmp_path / "z", bytes(5 * b)) == 0
    assert (tmp_path / "z").stat().st_size == 5 * b
    assert write_sparse(tmp_path / "e", b"") == 0 and (tmp_path / "e").read_bytes() == b""


def test_an_inflated_shard_has_the_bytes_save_file_writes(tmp_path: Path) -> None:
    import torch
    from safetensors.torch import save, save_file

    t = {"w": torch.zeros((64, 2304), dtype=torch.bfloat16), "n": torch.arange(7, dtype=torch.float32)}
    t["w"][:3, :5] = 1.5
    save_file(t, str(tmp_path / "dense"), metadata={"format": "pt"})
    write_sparse(tmp_path / "sparse", save(t, metadata={"format": "pt"}))
    assert (tmp_path / "sparse").read_bytes() == (tmp_path / "dense").read_bytes()


# --- the exactness rule ------------------------------------------------------------------------

@pytest.mark.parametrize("hidden", [576, 2304, 9216])
def test_hidden_576_times_power_of_4_is_accepted(hidden: int) -> None:
    inf = Inflation(hidden=hidden, intermediate=1536)
    assert inf.factor == hidden // BASE_HIDDEN
    assert inf.norm_scale ** 2 * inf.factor == 1.0  # 1/sqrt(f) is a power of two: exact


@pytest.mark.parametrize("hidden", [1000, 1152, 4608, 288, 0, -576])
def test_other_hidden_widths_are_refused_naming_the_parameter(hidden: int) -> None:
    with pytest.raises(InflationError, match=rf"Inflation\.hidden={hidden}: must be 576 × 4\^k") as err:
        Inflation(hidden=hidden)
    assert "RMSNorm" in str(err.value) and "exact" in str(err.value)
    assert isinstance(err.value, SpecguardError)


def test_intermediate_below_the_model_and_negative_extra_layers_are_refused() -> None:
    with pytest.raises(InflationError, match=r"Inflation\.intermediate=1024: must be ≥ 1536"):
        Inflation(hidden=9216, intermediate=1024)
    with pytest.raises(InflationError, match=r"Inflation\.extra_layers=-1"):
        Inflation(extra_layers=-1)
    with pytest.raises(InflationError, match=r"Inflation\.hidden=9216\.0: expected an integer"):
        Inflation(hidden=9216.0)  # type: ignore[arg-type]
    Inflation(hidden=576, intermediate=1536, extra_layers=0)  # the identity is allowed


@pytest.mark.parametrize("name, intermediate, params", [
    ("smollm2-135m-as-10b", 12288, 11_070_379_008),   # 22.1 GB in bf16
    ("smollm2-135m-as-31b", 36864, 31_454_696_448),   # 62.9 GB in bf16
])
def test_the_builtins_are_registered_with_their_size(name: str, intermediate: int, params: int) -> None:
    model = BUILTINS[name]
    assert isinstance(model, InflatedModel) and model.base == "smollm2-135m-instruct"
    assert model.inflation == Inflation(hidden=9216, intermediate=intermediate, extra_layers=0)
    assert model.dtype == "bfloat16"
    # every parameter is read once per decode step (the head is tied to the embedding)
    assert model.inflation.parameter_count() == params


def test_resolve_model_dispatches_to_the_inflater(monkeypatch: pytest.MonkeyPatch) -> None:
    import specguard.serving.model as model_mod

    seen: list[InflatedModel] = []

    def fake(model: InflatedModel) -> Path:
        seen.append(model)
        return Path("/cache/x")
    monkeypatch.setattr(model_mod, "ensure_inflated", fake)
    assert resolve_model("builtin:smollm2-135m-as-10b") == "/cache/x"
    assert seen == [BUILTINS["smollm2-135m-as-10b"]]
    with pytest.raises(ModelError, match="builtin:smollm2-135m-as-10b"):
        resolve_model("builtin:nope")  # the known list names it


# --- on the real weights -----------------------------------------------------------------------

@pytest.fixture(scope="module")
def smollm2() -> Path:
    for mod in ("torch", "transformers", "safetensors"):
        pytest.importorskip(mod, reason=f"inflating and loading SmolLM2 needs {mod}")
    folder = cache_root() / "models" / "smollm2-135m-instruct"
    if verify_folder(folder):
        return folder
    from specguard.serving.model import ensure_builtin

    try:
        return ensure_builtin(BUILTINS["smollm2-135m-instruct"])  # type: ignore[arg-type]
    except (ModelError, ImportError, OSError) as exc:
        pytest.skip(f"no verified SmolLM2-135M folder at {folder} and it cannot be built here: {exc}")


@pytest.fixture
def one_thread() -> Any:
    """The machine's cores are shared: one thread costs half the CPU time of two at the same wall time."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _digests(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_the_identity_inflation_reproduces_the_tensors_deterministically(smollm2: Path, tmp_path: Path) -> None:
    from safetensors import safe_open

    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        inflate_folder(smollm2, out, Inflation(hidden=576, intermediate=1536), layers=1, max_shard_bytes=32 << 20)
    assert _digests(a) == _digests(b)
    index = json.loads((a / "model.safetensors.index.json").read_text())
    assert len(set(index["weight_map"].values())) == 2  # the 54 MiB embedding, then the rest
    with safe_open(str(smollm2 / "model.safetensors"), "pt") as src:
        for name, file in index["weight_map"].items():
            with safe_open(str(a / file), "pt") as f:
                assert f.get_tensor(name).equal(src.get_tensor(name)), name
    assert not (a / "specguard-manifest.json").exists()


def test_inflated_model_gives_the_same_greedy_tokens_and_logits(smollm2: Path, tmp_path: Path,
                                                                one_thread: None) -> None:
    import torch
    from safetensors import safe_open
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    layers = int(os.environ.get("SPECGUARD_INFLATE_LAYERS", "4"))
    inf = Inflation(hidden=2304, intermediate=3072, extra_layers=1)
    out = tmp_path / "inflated"
    t0 = time.perf_counter()
    summary = inflate_folder(smollm2, out, inf, dtype="float32", layers=layers, max_shard_bytes=256 << 20)
    build_s = time.perf_counter() - t0

    cfg = json.loads((out / "config.json").read_text())
    src_cfg = json.loads((smollm2 / "config.json").read_text())
    assert (cfg["hidden_size"], cfg["intermediate_size"], cfg["head_dim"]) == (2304, 3072, 64)
    assert (cfg["num_attention_heads"], cfg["num_key_value_heads"]) == (9, 3)
    assert cfg["num_hidden_layers"] == layers + 1 and cfg["dtype"] == "float32"
    assert cfg["rms_norm_eps"] * 4 == src_cfg["rms_norm_eps"]
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert index["metadata"]["total_size"] == summary["bytes"] == 4 * inf.parameter_count(layers=layers)
    assert len(summary["shards"]) > 1 and (out / "tokenizer.json").is_file()

    # The padding is where it should be.
    def tensor(name: str) -> torch.Tensor:
        with safe_open(str(out / index["weight_map"][name]), "pt") as f:
            return f.get_tensor(name)
    with safe_open(str(smollm2 / "model.safetensors"), "pt") as f:
        src_norm = f.get_tensor("model.layers.0.input_layernorm.weight").float()
    assert tensor("model.embed_tokens.weight")[:, 576:].abs().max() == 0
    assert tensor("model.layers.0.input_layernorm.weight")[:576].equal(src_norm / 2)
    assert tensor("model.layers.0.mlp.gate_proj.weight")[1536:].abs().max() == 0
    assert tensor("model.layers.0.mlp.down_proj.weight")[576:].abs().max() == 0
    assert tensor("model.layers.0.mlp.down_proj.weight")[:, 1536:].abs().max() == 0
    assert tensor("model.layers.0.self_attn.o_proj.weight")[576:].abs().max() == 0
    assert tensor("model.layers.0.self_attn.q_proj.weight")[:, 576:].abs().max() == 0
    extra = f"model.layers.{layers}."
    assert tensor(extra + "self_attn.o_proj.weight").abs().max() == 0
    assert tensor(extra + "mlp.down_proj.weight").abs().max() == 0
    assert tensor(extra + "self_attn.q_proj.weight").abs().max() > 0  # it still reads real weights

    torch.manual_seed(0)
    t0 = time.perf_counter()
    base_cfg = AutoConfig.from_pretrained(smollm2)
    base_cfg.num_hidden_layers = layers
    base = AutoModelForCausalLM.from_pretrained(smollm2, config=base_cfg, dtype=torch.float32).eval()
    loaded: Any = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32, output_loading_info=True)
    big, info = loaded
    big.eval()
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    tok = AutoTokenizer.from_pretrained(smollm2)
    load_s = time.perf_counter() - t0

    t0 = time.perf_counter()
    max_diff, max_logit, mismatches = 0.0, 0.0, []
    with torch.inference_mode():
        for prompt in PROMPTS:
            ids = tok(prompt, return_tensors="pt").input_ids
            runs = [m.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS,
                               min_new_tokens=NEW_TOKENS, do_sample=False, output_logits=True,
                               return_dict_in_generate=True, pad_token_id=tok.eos_token_id)
                    for m in (base, big)]
            a, b = (r.sequences[0, ids.shape[1]:].tolist() for r in runs)
            if a != b:
                mismatches.append((prompt, a, b))
            # Logits of every position of the whole sequence, fed to both models.
            seq = runs[0].sequences
            la, lb = base(seq).logits, big(seq).logits
            max_diff = max(max_diff, (la - lb).abs().max().item(),
                           *((x - y).abs().max().item() for x, y in zip(runs[0].logits, runs[1].logits)))
            max_logit = max(max_logit, la.abs().max().item())
    gen_s = time.perf_counter() - t0
    print(f"\ninflate {inf.describe()} layers={layers}: {summary['bytes'] / 1e6:.0f} MB in "
          f"{len(summary['shards'])} shards, build {build_s:.1f}s, load {load_s:.1f}s, "
          f"{len(PROMPTS)}×{NEW_TOKENS} tokens {gen_s:.1f}s; max |Δlogit| = {max_diff:.3g} "
          f"(largest |logit| {max_logit:.3g})")
    assert not mismatches, mismatches
    assert math.isfinite(max_diff) and max_diff < 1e-4 * max(1.0, max_logit)  # seen: 4.2e-05 to 4.6e-05 of 74.9


def test_the_cli_builds_it_through_resolve_model(monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    import specguard.serving.model as model_mod
    from specguard.__main__ import main

    monkeypatch.setattr(model_mod, "ensure_inflated", lambda model: Path("/cache/models") / model.name)
    assert main(["model", "smollm2-135m-as-10b"]) == 0
    assert capsys.readouterr().out.strip() == "/cache/models/smollm2-135m-as-10b"


def test_ensure_inflated_caches_verifies_and_rebuilds(smollm2: Path, tmp_path: Path,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    from specguard.serving.model import MANIFEST, ensure_inflated

    (tmp_path / "models").mkdir()
    (tmp_path / "models" / smollm2.name).symlink_to(smollm2)  # the verified base, not rebuilt
    model = InflatedModel(name="t", base=smollm2.name, inflation=Inflation(576, 1536, 1), license="Apache-2.0")
    folder = ensure_inflated(model, root=tmp_path)
    assert folder == tmp_path / "models" / "t" and verify_folder(folder)
    manifest = json.loads((folder / MANIFEST).read_text())
    assert manifest["inflation"] == "hidden=576,intermediate=1536,extra_layers=1"
    assert manifest["base"] == "builtin:smollm2-135m-instruct" and manifest["dtype"] == "bfloat16"
    assert manifest["base_manifest"] == hashlib.sha256((smollm2 / MANIFEST).read_bytes()).hexdigest()
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 31
    stamp = (folder / MANIFEST).stat().st_mtime_ns
    assert ensure_inflated(model, root=tmp_path) == folder and (folder / MANIFEST).stat().st_mtime_ns == stamp
    assert "rebuilding" not in capsys.readouterr().err

    changed = InflatedModel(name="t", base=smollm2.name, inflation=Inflation(576, 1536, 0), license="Apache-2.0")
    ensure_inflated(changed, root=tmp_path)  # a different recipe under the same name: stale
    assert "stale or failed verification; rebuilding" in capsys.readouterr().err
    assert json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 30
    (folder / "config.json").write_text("{}")  # corrupt: rebuilt
    (tmp_path / "models" / ".t-killed").mkdir()  # what a killed build leaves: removed
    ensure_inflated(changed, root=tmp_path)
    assert verify_folder(folder) and json.loads((folder / "config.json").read_text())["num_hidden_layers"] == 30
    assert not [p for p in (tmp_path / "models").iterdir() if p.name.startswith(".")]  # no temp folder left
