# syntax=docker/dockerfile:1
# GPU workstation image: the service on onnxruntime-gpu (CUDA 12, cuDNN 9) with the
# models baked in, no TensorFlow. Started without a GPU (or with
# EXECUTION_PROVIDER=cpu) the same image serves on the CPU.
#
#   docker build -t dblge-scar:0.1.0 .
#   docker run --gpus all -p 8000:8000 -v lge-results:/data dblge-scar:0.1.0

# ---- build: a wheelhouse of the service and its runtime dependencies ---------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
# The base install only (no [train] extra: no TensorFlow). onnxruntime is swapped
# for onnxruntime-gpu of the same version, which provides the same module.
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && rm /wheels/onnxruntime-1.31.1-*.whl \
 && pip download --no-cache-dir --no-deps --dest /wheels onnxruntime-gpu==1.31.1

# ---- runtime: CUDA + cuDNN libraries for onnxruntime-gpu ---------------------------
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04 AS runtime
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv curl \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /wheels
# --no-deps: the wheelhouse is already the resolved set (with onnxruntime-gpu).
RUN pip install --no-cache-dir --no-index --no-deps /wheels/*.whl \
 && rm -rf /wheels \
 && python -c "import onnxruntime, service.api.app; print(onnxruntime.get_available_providers())"
RUN useradd --create-home --uid 10001 lge \
 && mkdir -p /data \
 && chown lge:lge /data
WORKDIR /app
COPY models ./models
ENV HOST=0.0.0.0 PORT=8000 MODELS_DIR=/app/models DATA_DIR=/data EXECUTION_PROVIDER=auto
USER lge
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS "http://127.0.0.1:${PORT}/healthz" || exit 1
CMD ["python", "-m", "service"]
