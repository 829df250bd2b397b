"""What the numbers were measured on: date, CPU, cores, load and library versions."""

from __future__ import annotations

import datetime
import importlib.metadata
import os
import platform

PACKAGES = ("keras-vit", "tensorflow", "keras", "keras-hub", "torch", "timm", "numpy")


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (or `platform.processor()` elsewhere)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> set[str]:
    """The CPU feature flags (empty when /proc/cpuinfo is unavailable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as handle:
            for line in handle:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


def versions() -> dict[str, str]:
    """Installed versions of the measured libraries, read without importing them."""
    found = {"python": platform.python_version()}
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            found[package] = "not installed"
    return found


def load_average() -> list[float]:
    """1, 5 and 15 minute load averages (other processes competing for the cores)."""
    return [round(value, 2) for value in os.getloadavg()]


def host_kind(flags: set[str]) -> str:
    """Which kind of host a table comes from, by its matrix units: the bf16 speed story differs on each."""
    if "amx_bf16" in flags:
        return "AMX (bf16 matrix tiles)"
    if "avx512_bf16" in flags:
        return "AVX512_BF16 (bf16 dot products, no AMX)"
    return "no native bf16 (emulated)"


def describe() -> dict:
    """Everything a reader needs to judge the numbers."""
    flags = cpu_flags()
    info = dict(
        date=datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        cpu=cpu_model(),
        logical_cores=os.cpu_count(),
        avx512_bf16="avx512_bf16" in flags,
        avx512_fp16="avx512_fp16" in flags,
        amx_bf16="amx_bf16" in flags,
        host_kind=host_kind(flags),
        platform=platform.platform(),
        versions=versions(),
    )
    try:
        import psutil

        info["physical_cores"] = psutil.cpu_count(logical=False)
        info["memory_gib"] = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:  # psutil is in the `bench` extra; the rest works without it
        pass
    return info
