"""What the CPU is, for every figure that holds only on it: name, cores and the vector flags that
change inference speed (bf16/AMX, VNNI for int8)."""
from __future__ import annotations

import os
import platform
from pathlib import Path

FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpu_summary() -> dict:
    name, flags = platform.processor() or "unknown CPU", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return {"name": name, "cores": os.cpu_count(), "flags": [f for f in FLAGS if f in flags]}


def cpu_line() -> str:
    cpu = cpu_summary()
    return f"{cpu['name']}, {cpu['cores']} cores, flags: {' '.join(cpu['flags']) or 'none of ' + '/'.join(FLAGS)}"
