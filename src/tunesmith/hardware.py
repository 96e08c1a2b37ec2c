"""Facts about the machine and the process: this process's rank among several, whether the CPU or GPU computes
bf16 natively (and so the bf16 policy of `train.bf16: auto`), and the machine summary every figure is stated with."""

from __future__ import annotations

import logging
import os

from tunesmith.errors import TunesmithError

log = logging.getLogger("tunesmith")


def rank() -> int:
    """This process's rank in a distributed run (0 when there is none)."""
    return int(os.environ.get("RANK", "0"))


def world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def is_main() -> bool:
    """Whether this process writes the run folder (the only process, or rank 0 of several)."""
    return rank() == 0


# ---------------------------------------------------------------------------------------------
# bf16 mixed precision: on where the hardware computes bf16 natively, fp32 elsewhere

NATIVE_BF16_CPU_FLAGS = {"amx_bf16": "AMX", "avx512_bf16": "AVX-512 BF16"}


def _cpu_facts() -> tuple[str, set[str]]:
    """(CPU name, feature flags) from torch's cpuinfo and /proc/cpuinfo (either may be missing)."""
    name, flags = "", set()
    try:
        from torch.cpu import get_capabilities

        caps = get_capabilities()
        name = str(caps.get("cpu_name") or "")
        flags |= {k for k, v in caps.items() if v is True}
    except (ImportError, RuntimeError):
        pass
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("flags", "Features"):
                    flags |= set(value.split())
                elif key.strip() == "model name" and not name:
                    name = value.strip()
    except OSError:
        pass
    return name or "(unknown)", flags


def native_bf16(use_cpu: bool = False) -> tuple[bool, str]:
    """Whether training here would compute bf16 natively, and why: a CUDA GPU with bf16 (Ampere or newer), or a CPU
    with AMX or AVX-512 BF16. Elsewhere bf16 is emulated: on an AVX2-only CPU a bf16 matmul is ~40x slower than fp32."""
    import torch

    if torch.cuda.is_available() and not use_cpu:
        gpu = torch.cuda.get_device_name()
        if torch.cuda.is_bf16_supported(including_emulation=False):
            return True, f"GPU {gpu} computes bf16 natively"
        return False, f"GPU {gpu} has no native bf16 (needs compute capability 8.0 or newer)"
    name, flags = _cpu_facts()
    found = [label for flag, label in NATIVE_BF16_CPU_FLAGS.items() if flag in flags]
    if found:
        return True, f"CPU {name} has {' and '.join(found)}"
    capability = torch.backends.cpu.get_cpu_capability()
    return False, (f"CPU {name} has {capability} only, no AVX-512 BF16 or AMX: bf16 would be emulated, "
                   "~40x slower than fp32")


def bf16_problems(train_cfg) -> list[str]:
    """train.bf16: true on hardware without native bf16: one problem naming the key and the fix."""
    if train_cfg.bf16 is not True:
        return []
    native, why = native_bf16(train_cfg.use_cpu)
    if native:
        return []
    return [f"train.bf16: true asks for bf16 autocast, but {why}; set train.bf16: auto (bf16 where the hardware "
            "computes it natively, fp32 here) or false"]


def resolve_bf16(train_cfg) -> bool:
    """The bf16 autocast a run uses: train.bf16 true/false as given, 'auto' -> native_bf16(). The choice is logged;
    true on hardware without native bf16 raises a TunesmithError (see bf16_problems)."""
    problems = bf16_problems(train_cfg)
    if problems:
        raise TunesmithError(problems)
    if train_cfg.bf16 == "auto":
        on, why = native_bf16(train_cfg.use_cpu)
        message = f"bf16: {'on' if on else 'off'} (train.bf16: auto; {why})"
    else:
        on = bool(train_cfg.bf16)
        message = f"bf16: {'on' if on else 'off'} (train.bf16: {str(on).lower()})"
    log.info("%s", message)
    return on


# ---------------------------------------------------------------------------------------------
# GPU settings: model.dtype auto, model.attn_implementation, train.use_liger_kernel


def resolve_dtype(dtype: str, use_cpu: bool = False, announce: bool = True) -> str:
    """The weights dtype a run loads: model.dtype as given; 'auto' -> bfloat16 on a CUDA GPU that computes bf16
    natively, float32 elsewhere (a CPU keeps float32 weights even with native bf16: train.bf16 autocasts there)."""
    if dtype != "auto":
        return dtype
    import torch

    gpu = torch.cuda.is_available() and not use_cpu
    native, why = native_bf16(use_cpu) if gpu else (False, "training on CPU")
    dtype = "bfloat16" if gpu and native else "float32"
    if announce:
        log.info("model.dtype: auto -> %s (%s)", dtype, why)
    return dtype


def gpu_setting_problems(model_cfg, train_cfg) -> list[str]:
    """model.attn_implementation and train.use_liger_kernel on this machine: each problem names the key and the fix."""
    import importlib.util

    import torch

    gpu = torch.cuda.is_available() and not train_cfg.use_cpu
    problems = []
    if model_cfg.attn_implementation == "flash_attention_2":
        missing = [what for what, ok in (("a CUDA GPU (this machine trains on CPU)", gpu),
                                         ("the flash_attn package (pip install flash-attn)",
                                          importlib.util.find_spec("flash_attn") is not None)) if not ok]
        if missing:
            problems.append(f"model.attn_implementation: flash_attention_2 needs {' and '.join(missing)}; use sdpa "
                            "(PyTorch's fused attention, on CPU and GPU) or leave it unset")
    if train_cfg.use_liger_kernel:
        missing = [what for what, ok in (("a CUDA GPU (its kernels are Triton's; this machine trains on CPU)", gpu),
                                         ("the liger-kernel package (pip install liger-kernel)",
                                          importlib.util.find_spec("liger_kernel") is not None)) if not ok]
        if missing:
            problems.append(f"train.use_liger_kernel: true needs {' and '.join(missing)}; set it to false here")
    return problems


def machine(bf16: bool, dtype: str = "float32") -> dict:
    """What a run's figures were measured on, for manifest.json and the reports: the CPU (name and the vector
    capability torch uses: AVX2, AVX512, AMX...; which bf16 it computes natively), threads, the GPU if one is used,
    and the precision training actually ran in. Figures from two machines must never be compared blindly."""
    import torch

    name, flags = _cpu_facts()
    native = [label for flag, label in NATIVE_BF16_CPU_FLAGS.items() if flag in flags]
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    facts = {"cpu": name, "cpu_capability": torch.backends.cpu.get_cpu_capability(), "cpu_native_bf16": native,
             "cpu_count": os.cpu_count(), "threads": torch.get_num_threads(), "gpu": gpu,
             "precision": "bf16 autocast" if bf16 else f"{dtype} weights, no autocast"}
    vector = facts["cpu_capability"] + (f" + {' + '.join(native)}" if native else "")
    facts["summary"] = (f"{gpu}; " if gpu else "") + f"CPU {name} ({vector}), {facts['threads']} threads; " + facts["precision"]
    return facts


