# GPU workstation image: the service on onnxruntime-gpu, no TensorFlow.
# First draft (foundation issue); the PACS/containers issue completes and tests it.

# ---- build: wheels for the service only ------------------------------------
FROM python:3.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
RUN pip wheel --no-cache-dir --wheel-dir /wheels . \
 && rm -f /wheels/onnxruntime-*.whl \
 && pip wheel --no-cache-dir --no-deps --wheel-dir /wheels onnxruntime-gpu==1.31.1

# ---- runtime: CUDA + cuDNN for onnxruntime-gpu ------------------------------
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04 AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3-pip curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /wheels /wheels
RUN python3.11 -m pip install --no-cache-dir --break-system-packages --no-index \
        --find-links /wheels dblge-scar onnxruntime-gpu \
 && rm -rf /wheels
RUN useradd --create-home --uid 10001 lge
WORKDIR /app
COPY models ./models
ENV HOST=0.0.0.0 PORT=8000 MODELS_DIR=/app/models DATA_DIR=/data EXECUTION_PROVIDER=auto
RUN mkdir -p /data && chown lge:lge /data
USER lge
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8000/healthz || exit 1
CMD ["python3.11", "-m", "service"]
