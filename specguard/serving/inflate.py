"""Inflate SmolLM2-135M into a model that computes the same function but reads far more bytes.

Speculative decoding pays when a decode step is bound by reading the weights; a 135M-parameter
target is too small for that on a big GPU. ``builtin:smollm2-135m-as-10b`` is SmolLM2-135M with its
residual stream zero-padded from 576 to 9216 dims and its MLP from 1536 to 12288 units: ~11.1 B
parameters, ~22 GB in bfloat16, the same greedy tokens.

Why it is the same function (f = new hidden / 576):

* the new residual dims start at zero (zero columns in ``embed_tokens`` and, if untied,
  ``lm_head``) and stay zero: ``o_proj`` and ``down_proj`` get zero output rows, so no layer
  writes into them; q/k/v and gate/up get zero input columns, so nothing reads them;
* the padded MLP units see zero gate and up inputs (zero rows), output ``silu(0) * 0 = 0``, and
  ``down_proj`` has zero columns for them anyway;
* RMSNorm over the padded stream sees the same sum of squares divided by ``576 f`` instead of
  576, i.e. ``mean / f``. With ``rms_norm_eps / f`` that is ``rsqrt(mean/f + eps/f) =
  sqrt(f) rsqrt(mean + eps)``, cancelled by every norm weight × ``1/sqrt(f)``. When f = 4^k,
  ``sqrt(f) = 2^k`` and all of these rescalings are exact in binary floating point; any other f
  is refused. What is left is the summation order of longer dot products (zeros add exactly, but
  kernels block differently), hence logits equal to rounding, not bit for bit;
* the heads are unchanged (9 query and 3 key/value heads of 64): ``head_dim`` is written to
  config.json, since the default ``hidden_size / num_attention_heads`` would be 1024;
* optional extra layers, appended after the real ones, are copies of real layers with
  ``o_proj`` and ``down_proj`` all zero: they read their bytes and add exactly zero.

The folder is written shard by shard into safetensors files of at most ``max_shard_bytes`` (plus
``model.safetensors.index.json``), so building 63 GB needs one shard of memory, not the whole model.
The padded weights are almost all zeros, and each shard is written as a sparse file: its all-zero
4 KiB blocks are left as holes, which read back as zeros. The ~63 GB folder took 1.2 GB of
disk; whoever reads it (vLLM, a hash) still reads every byte. The derivation is deterministic: the
same source folder gives the same bytes.
"""

from __future__ import annotations

import json
import math
import shutil
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from specguard.config.errors import SpecguardError

BASE_HIDDEN = 576          # SmolLM2-135M's hidden_size
BASE_INTERMEDIATE = 1536   # SmolLM2-135M's intermediate_size
DTYPES = ("bfloat16", "float32")  # both hold the bf16 source exactly; float16 would not
INDEX = "model.safetensors.index.json"
_WEIGHT_FILES = ("model.safetensors", INDEX)


class InflationError(SpecguardError, ValueError):
    """An inflation that would not compute the same function, or a source it cannot inflate."""


@dataclass(frozen=True)
class Inflation:
    """How far to pad SmolLM2-135M: residual width, MLP width and zero-contribution layers."""

    hidden: int = 9216
    intermediate: int = 12288
    extra_layers: int = 0

    def __post_init__(self) -> None:
        for name, value in asdict(self).items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise InflationError(f"Inflation.{name}={value!r}: expected an integer")
        ratio, rest = divmod(self.hidden, BASE_HIDDEN)
        if rest or ratio < 1 or ratio & (ratio - 1) or (ratio.bit_length() - 1) % 2:
            f = f"{self.hidden / BASE_HIDDEN:g}"
            raise InflationError(
                f"Inflation.hidden={self.hidden}: must be {BASE_HIDDEN} × 4^k (k ≥ 0: 576, 2304, 9216, "
                f"36864, ...); the RMSNorm rescale (weights × 1/sqrt(f), eps × 1/f with f = hidden/"
                f"{BASE_HIDDEN} = {f}) is exact in binary floating point only when f is a power of 4")
        if self.intermediate < BASE_INTERMEDIATE:
            raise InflationError(
                f"Inflation.intermediate={self.intermediate}: must be ≥ {BASE_INTERMEDIATE}, the model's "
                f"own MLP width; padding adds zero units, it cannot remove real ones")
        if self.extra_layers < 0:
            raise InflationError(f"Inflation.extra_layers={self.extra_layers}: must be ≥ 0")

    @property
    def factor(self) -> int:
        """f = hidden / 576, a power of 4."""
        return self.hidden // BASE_HIDDEN

    @property
    def norm_scale(self) -> float:
        """1 / sqrt(f), a power of 2: every RMSNorm weight is multiplied by it."""
        return 1.0 / math.isqrt(self.factor)

    def describe(self) -> str:
        return f"hidden={self.hidden},intermediate={self.intermediate},extra_layers={self.extra_layers}"

    def parameter_count(self, *, vocab: int = 49152, layers: int = 30, heads: int = 9, kv_heads: int = 3,
                        head_dim: int = 64, tied: bool = True) -> int:
        """Parameters of the inflated model (defaults: SmolLM2-135M's shape)."""
        h, i = self.hidden, self.intermediate
        per_layer = (heads + 2 * kv_heads) * head_dim * h + heads * head_dim * h + 3 * h * i + 2 * h
        return vocab * h * (1 if tied else 2) + (layers + self.extra_layers) * per_layer + h


def inflate_folder(src: Path | str, out: Path | str, inflation: Inflation, *, dtype: str = "bfloat16",
                   layers: int | None = None, max_shard_bytes: int = 2 << 30) -> dict[str, Any]:
    """Write the inflated model of the Hugging Face folder ``src`` into the empty folder ``out``.

    ``layers`` keeps only the first N layers of the source (tests; the builtin keeps all 30);
    ``inflation.extra_layers`` come after them. Returns a summary: parameters, bytes, shard files.
    Non-weight files (tokenizer, chat template, generation config) are copied as they are.
    """
    import torch
    from safetensors import safe_open
    from safetensors.torch import save

    src, out = Path(src), Path(out)
    if dtype not in DTYPES:
        raise InflationError(f"dtype={dtype!r}: expected one of {', '.join(DTYPES)}")
    if out.exists() and any(out.iterdir()):
        raise InflationError(f"{out}: not empty; shards of an earlier build would mix with the new ones")
    torch_dtype = getattr(torch, dtype)
    cfg = json.loads((src / "config.json").read_text())
    _check_source(src, cfg)
    n_src = int(cfg["num_hidden_layers"])
    if layers is not None and not 1 <= layers <= n_src:
        raise InflationError(f"layers={layers}: expected 1..{n_src} (the source has {n_src} layers)")
    n_keep = n_src if layers is None else layers
    heads, kv_heads = int(cfg["num_attention_heads"]), int(cfg["num_key_value_heads"])
    head_dim = int(cfg.get("head_dim") or BASE_HIDDEN // heads)
    tied = bool(cfg.get("tie_word_embeddings", False))
    h0, h, i = BASE_HIDDEN, inflation.hidden, inflation.intermediate
    scale = inflation.norm_scale

    with ExitStack() as stack:
        where = _tensor_files(src)
        handles = {f: stack.enter_context(safe_open(str(src / f), framework="pt")) for f in sorted(set(where.values()))}

        def load(name: str) -> torch.Tensor:
            if name not in where:
                raise InflationError(f"{src}: tensor {name} is missing")
            return handles[where[name]].get_tensor(name)

        def padded(name: str, shape: tuple[int, ...], *, zero: bool = False) -> Callable[[], torch.Tensor]:
            def make() -> torch.Tensor:
                t = load(name)
                if t.dim() != len(shape) or any(a > b for a, b in zip(t.shape, shape)):
                    raise InflationError(f"{src}: {name} has shape {tuple(t.shape)}, cannot pad it to {shape}")
                new = torch.zeros(shape, dtype=torch_dtype)
                if not zero:
                    new[tuple(slice(0, n) for n in t.shape)] = t.to(torch_dtype)
                return new
            return make

        def norm(name: str) -> Callable[[], torch.Tensor]:
            def make() -> torch.Tensor:
                t = load(name).to(torch.float32)
                if tuple(t.shape) != (h0,):
                    raise InflationError(f"{src}: {name} has shape {tuple(t.shape)}, expected ({h0},)")
                scaled = (t * scale).to(torch_dtype)
                if not torch.equal(scaled.to(torch.float32) / scale, t):  # subnormals would lose bits
                    raise InflationError(f"{src}: {name} × {scale:g} is not exact in {dtype}")
                new = torch.zeros((h,), dtype=torch_dtype)
                new[:h0] = scaled
                return new
            return make

        # (name, shape, make): the whole plan is known before any tensor is built, so shards can be
        # assigned (and numbered) up front and written one at a time.
        plan: list[tuple[str, tuple[int, ...], Callable[[], torch.Tensor]]] = []
        vocab = int(cfg["vocab_size"])
        plan.append(("model.embed_tokens.weight", (vocab, h), padded("model.embed_tokens.weight", (vocab, h))))
        for j in range(n_keep + inflation.extra_layers):
            s = f"model.layers.{j % n_keep}."
            d = f"model.layers.{j}."
            extra = j >= n_keep
            plan += [
                (d + "input_layernorm.weight", (h,), norm(s + "input_layernorm.weight")),
                (d + "self_attn.q_proj.weight", (heads * head_dim, h), padded(s + "self_attn.q_proj.weight",
                                                                              (heads * head_dim, h))),
                (d + "self_attn.k_proj.weight", (kv_heads * head_dim, h), padded(s + "self_attn.k_proj.weight",
                                                                                 (kv_heads * head_dim, h))),
                (d + "self_attn.v_proj.weight", (kv_heads * head_dim, h), padded(s + "self_attn.v_proj.weight",
                                                                                 (kv_heads * head_dim, h))),
                (d + "self_attn.o_proj.weight", (h, heads * head_dim), padded(s + "self_attn.o_proj.weight",
                                                                              (h, heads * head_dim), zero=extra)),
                (d + "post_attention_layernorm.weight", (h,), norm(s + "post_attention_layernorm.weight")),
                (d + "mlp.gate_proj.weight", (i, h), padded(s + "mlp.gate_proj.weight", (i, h))),
                (d + "mlp.up_proj.weight", (i, h), padded(s + "mlp.up_proj.weight", (i, h))),
                (d + "mlp.down_proj.weight", (h, i), padded(s + "mlp.down_proj.weight", (h, i), zero=extra)),
            ]
        plan.append(("model.norm.weight", (h,), norm("model.norm.weight")))
        if not tied:
            plan.append(("lm_head.weight", (vocab, h), padded("lm_head.weight", (vocab, h))))
        _check_names(src, where, plan, n_keep, tied)

        itemsize = torch.empty((), dtype=torch_dtype).element_size()
        shards: list[list[int]] = [[]]
        size = 0
        for k, (_, shape, _) in enumerate(plan):
            nbytes = math.prod(shape) * itemsize
            if shards[-1] and size + nbytes > max_shard_bytes:
                shards.append([])
                size = 0
            shards[-1].append(k)
            size += nbytes
        out.mkdir(parents=True, exist_ok=True)
        weight_map: dict[str, str] = {}
        names = [f"model-{n + 1:05d}-of-{len(shards):05d}.safetensors" for n in range(len(shards))]
        for file, members in zip(names, shards):
            tensors = {plan[k][0]: plan[k][2]() for k in members}
            write_sparse(out / file, save(tensors, metadata={"format": "pt"}))
            weight_map.update((name, file) for name in tensors)
            del tensors
    total = sum(math.prod(shape) for _, shape, _ in plan)
    index = {"metadata": {"total_size": total * itemsize, "total_parameters": total}, "weight_map": weight_map}
    (out / INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")

    new_cfg = dict(cfg)
    new_cfg.update(hidden_size=h, intermediate_size=i, head_dim=head_dim,
                   num_hidden_layers=n_keep + inflation.extra_layers,
                   rms_norm_eps=float(cfg["rms_norm_eps"]) / inflation.factor)
    for key in ("dtype", "torch_dtype"):
        if key in cfg or key == "dtype":
            new_cfg[key] = dtype
    if isinstance(cfg.get("layer_types"), list):  # per-layer lists (newer configs) follow the layers
        new_cfg["layer_types"] = [cfg["layer_types"][j % n_keep] for j in range(new_cfg["num_hidden_layers"])]
    (out / "config.json").write_text(json.dumps(new_cfg, indent=2, sort_keys=True) + "\n")
    for p in sorted(src.iterdir()):
        if p.is_file() and p.name != "config.json" and not p.name.startswith("specguard-") \
                and not p.name.endswith(".safetensors") and p.name not in _WEIGHT_FILES:
            shutil.copyfile(p, out / p.name)
    return {"parameters": total, "bytes": total * itemsize, "shards": names, "dtype": dtype}


SPARSE_BLOCK = 1 << 12  # the file system's usual block size: a hole is a whole block of zeros


def write_sparse(path: Path | str, data: bytes) -> int:
    """Write ``data`` to ``path`` leaving every all-zero ``SPARSE_BLOCK`` as a hole (a file system
    without holes stores zeros instead: the same bytes either way). Returns the bytes written."""
    import numpy as np

    view = memoryview(data)
    full = len(data) // SPARSE_BLOCK
    nonzero = np.ones(full + (len(data) % SPARSE_BLOCK > 0), dtype=bool)
    if full:
        blocks = np.frombuffer(data, dtype=np.uint64, count=full * SPARSE_BLOCK // 8)
        nonzero[:full] = blocks.reshape(full, SPARSE_BLOCK // 8).any(axis=1)
    edges = np.flatnonzero(np.diff(np.concatenate(([0], nonzero.astype(np.int8), [0]))))
    written = 0
    with open(path, "wb") as f:
        for start, end in zip(edges[0::2] * SPARSE_BLOCK, edges[1::2] * SPARSE_BLOCK):
            f.seek(int(start))
            written += f.write(view[int(start):int(min(end, len(data)))])
        f.truncate(len(data))
    return written


def _check_source(src: Path, cfg: dict[str, Any]) -> None:
    archs = cfg.get("architectures") or []
    if cfg.get("model_type") != "llama" or "LlamaForCausalLM" not in archs:
        raise InflationError(f"{src}/config.json: expected a LlamaForCausalLM (model_type llama), got "
                             f"model_type={cfg.get('model_type')!r}, architectures={archs!r}")
    for key, want in (("hidden_size", BASE_HIDDEN), ("intermediate_size", BASE_INTERMEDIATE)):
        if cfg.get(key) != want:
            raise InflationError(f"{src}/config.json: {key}={cfg.get(key)!r}, expected {want} (SmolLM2-135M)")
    for key in ("attention_bias", "mlp_bias"):
        if cfg.get(key):
            raise InflationError(f"{src}/config.json: {key}=true is not supported")
    heads = int(cfg["num_attention_heads"])
    if int(cfg.get("head_dim") or BASE_HIDDEN // heads) * heads != BASE_HIDDEN:
        raise InflationError(f"{src}/config.json: num_attention_heads × head_dim must be {BASE_HIDDEN}")


def _tensor_files(src: Path) -> dict[str, str]:
    if (src / INDEX).is_file():
        return dict(json.loads((src / INDEX).read_text())["weight_map"])
    if (src / "model.safetensors").is_file():
        from safetensors import safe_open

        with safe_open(str(src / "model.safetensors"), framework="pt") as f:
            return {name: "model.safetensors" for name in f.keys()}  # noqa: SIM118 (safe_open is not a mapping)
    raise InflationError(f"{src}: no model.safetensors or {INDEX}")


def _check_names(src: Path, where: dict[str, str], plan: list[Any], n_keep: int, tied: bool) -> None:
    """Every source tensor of the kept layers must be one the plan pads: an unknown one (a bias, a
    rotary buffer) would be silently dropped and the function would change."""
    read = {name for name, _, _ in plan
            if not (name.startswith("model.layers.") and int(name.split(".")[2]) >= n_keep)}
    for name in where:
        parts = name.split(".")
        if parts[:2] == ["model", "layers"] and int(parts[2]) >= n_keep:
            continue  # layers cut off by `layers`
        if tied and name == "lm_head.weight":
            continue  # a tied head is the embedding
        if name not in read:
            raise InflationError(f"{src}: tensor {name} has no inflation rule")
