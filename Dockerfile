# syntax=docker/dockerfile:1
# Two images from one file, both with the models baked in, no TensorFlow, user lge:
#
#   cuda (the default, last stage): the service on onnxruntime-gpu (CUDA 12, cuDNN 9);
#        started without a GPU (or with EXECUTION_PROVIDER=cpu) it serves on the CPU.
#   cpu  (--target cpu): the service on onnxruntime (CPU), on a Debian bookworm base.
#
#   V=$(deploy/version.sh)        # the package's version (service/__init__.py)
#   docker build --build-arg VERSION=$V -t dblge-scar:$V .
#   docker build --build-arg VERSION=$V --target cpu -t dblge-scar:$V-cpu .
#   docker run --gpus all -p 8000:8000 -e API_KEY=... -v lge-results:/data dblge-scar:$V
#
# VERSION is required and checked against the installed package; it becomes the
# label org.opencontainers.image.version. The base images are build arguments, so
# a site without internet can build from its own (deploy/offline-image.sh, which also
# fills deploy/wheelhouse/ with host-made wheels: then nothing is fetched here).
ARG BUILD_BASE=python:3.11-slim-bookworm
ARG CPU_BASE=python:3.11-slim-bookworm
ARG CUDA_BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

# ---- build: a wheelhouse of the service and its runtime dependencies ---------------
FROM ${BUILD_BASE} AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY service ./service
COPY training ./training
COPY deploy/wheelhouse ./wheelhouse
# The base install only (no [train] extra: no TensorFlow). From deploy/wheelhouse
# alone when it holds wheels (an offline build), else from the package index.
RUN python3 -m venv /opt/build \
 && if ls wheelhouse/*.whl >/dev/null 2>&1; then from="--no-index --find-links wheelhouse"; \
    else from=""; fi \
 && /opt/build/bin/pip wheel --no-cache-dir $from --wheel-dir /wheels . \
 && rm -rf wheelhouse

# ---- cpu: the service on onnxruntime (CPU) ------------------------------------------
FROM ${CPU_BASE} AS cpu
ARG VERSION
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build /wheels /wheels
# Install, check (no TensorFlow; VERSION is the package's, or the build fails), add the user.
COPY deploy/install-service.sh /tmp/
RUN sh /tmp/install-service.sh "$VERSION" && rm /tmp/install-service.sh
WORKDIR /app
COPY models ./models
ENV HOST=0.0.0.0 PORT=8000 MODELS_DIR=/app/models DATA_DIR=/data EXECUTION_PROVIDER=auto
LABEL org.opencontainers.image.title="dblge-scar (CPU)" \
      org.opencontainers.image.version="${VERSION}"
USER lge
EXPOSE 8000
VOLUME ["/data"]
# Python's urllib, not curl: the offline (debootstrap) base has no curl.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/healthz', timeout=4)" || exit 1
CMD ["python", "-m", "service"]

# ---- the CUDA wheelhouse: onnxruntime swapped for onnxruntime-gpu of the same version,
# which provides the same module.
FROM build AS build-cuda
RUN ort=$(basename /wheels/onnxruntime-[0-9]*.whl | cut -d- -f2) \
 && rm /wheels/onnxruntime-[0-9]*.whl \
 && /opt/build/bin/pip download --no-cache-dir --no-deps --dest /wheels "onnxruntime-gpu==$ort"

# ---- cuda: CUDA + cuDNN libraries for onnxruntime-gpu (the default target) ----------
FROM ${CUDA_BASE} AS cuda
ARG VERSION
ENV DEBIAN_FRONTEND=noninteractive PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3.11 python3.11-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3.11 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
COPY --from=build-cuda /wheels /wheels
COPY deploy/install-service.sh /tmp/
RUN sh /tmp/install-service.sh "$VERSION" && rm /tmp/install-service.sh
WORKDIR /app
COPY models ./models
ENV HOST=0.0.0.0 PORT=8000 MODELS_DIR=/app/models DATA_DIR=/data EXECUTION_PROVIDER=auto
LABEL org.opencontainers.image.title="dblge-scar (CUDA)" \
      org.opencontainers.image.version="${VERSION}"
USER lge
EXPOSE 8000
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:' + os.environ['PORT'] + '/healthz', timeout=4)" || exit 1
CMD ["python", "-m", "service"]
