#!/usr/bin/env bash
# Installs recsys (editable, with test tools) into the active Python environment.
#   bash scripts/setup.sh            # auto: CPU PyTorch unless an NVIDIA GPU is visible
#   RECSYS_TORCH=keep bash scripts/setup.sh   # keep whatever torch is already installed
# pyproject.toml only asks for torch>=2.2, so GPU users keep their CUDA build; on machines
# without a GPU this pins the CPU build (scripts/constraints-cpu.txt) instead of several GB of CUDA.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-python3}"
args=(-e ".[dev]")
if [ "${RECSYS_TORCH:-auto}" != "keep" ] && ! { command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; }; then
  echo "setup: no NVIDIA GPU found: installing the CPU build of PyTorch"
  args=(-c scripts/constraints-cpu.txt "${args[@]}")
fi
"$PY" -m pip install --disable-pip-version-check -q "${args[@]}"
command -v pyenv >/dev/null 2>&1 && pyenv rehash || true
"$PY" -c "import torch, recsys_cli; print(f'setup: recsys {recsys_cli.__version__}, torch {torch.__version__}, cuda {torch.cuda.is_available()}')"
