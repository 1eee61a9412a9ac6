#!/usr/bin/env bash
# Spark GPU resource discovery script (spark.executor.resource.gpu.discoveryScript): prints the GPUs this executor
# can use as {"name": "gpu", "addresses": ["0", "1", ...]}. Honors CUDA_VISIBLE_DEVICES when it lists plain indices.
# Usage in conf/cluster.yaml:
#   spark.executor.resource.gpu.amount: "1"
#   spark.executor.resource.gpu.discoveryScript: /path/to/semmem/conf/gpu-discovery.sh
# (no spark.task.resource.gpu.amount: only the model stages ask for a GPU per task, see semmem.spark.gpu_task_profile)
set -euo pipefail
if [[ -n "${CUDA_VISIBLE_DEVICES:-}" && "${CUDA_VISIBLE_DEVICES}" =~ ^[0-9,]+$ ]]; then
  ids=$(echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n')
elif command -v nvidia-smi >/dev/null 2>&1; then
  ids=$(nvidia-smi --query-gpu=index --format=csv,noheader 2>/dev/null || true)
else
  ids=""
fi
addresses=$(echo "$ids" | sed '/^\s*$/d' | sed 's/^\s*//;s/\s*$//' | awk '{printf "%s\"%s\"", (NR>1?",":""), $0}')
echo "{\"name\": \"gpu\", \"addresses\": [${addresses}]}"
