# Sourced by the GPU scripts (gpu_run.sh, gpu_probe.sh): a lent GPU machine has torch but not
# pydantic, which travels as cp312 wheels in .whl/ (docs/benchmarks.md "GPU"). Sets PY, and
# SHIM: Python that puts benchmarks/ and platform/ on the path and installs device_shim.
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
if [ -d .whl ] && ! python3 -c "import pydantic" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit 2
    export PYTHONPATH=/tmp/site
fi
PY=${PY:-python3}
SHIM="import sys; sys.path[:0] = ['benchmarks', 'platform']; import device_shim; device_shim.install()"
