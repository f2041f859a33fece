# syntax=docker/dockerfile:1
# One image for every gradq service of docker-compose.yml: the migration step, the workers
# and Flower. The entrypoint is the `gradq` console script, so a container's command is a
# gradq command line (`db upgrade`, `worker --cpu`, ...).
#
#   docker build -t gradq:cpu .                     NumPy workers, migrations, Flower
#   docker build -t gradq:gpu --target gpu .        adds CuPy (the `cuda12` extra)
#   docker build -t gradq:cpu --build-arg EXTRAS=flower .   choose the extras of the base
#
# The GPU image needs only the NVIDIA driver on the host (NVIDIA Container Toolkit): the
# CUDA libraries come from PyPI with CuPy.

FROM python:3.11-slim AS cpu

# Extras of the base image (comma-separated, from pyproject.toml); Flower is in by default.
ARG EXTRAS=flower

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    GRADQ_HOME=/home/gradq/.gradq

WORKDIR /opt/gradq
# What the build reads: the project file (with its readme) and the package's folders.
COPY pyproject.toml README.md ./
COPY gradq_pkg/ gradq_pkg/
COPY cli/ cli/
COPY service/ service/
COPY workers/ workers/
COPY train/ train/
COPY nn/ nn/
COPY migrations/ migrations/
COPY ui/ ui/
COPY examples/ examples/

# A regular (not editable) install into the image's Python, then a user to run it.
RUN pip install "/opt/gradq[${EXTRAS}]" \
    && useradd --create-home --uid 10001 --user-group gradq \
    && mkdir -p /home/gradq/.gradq \
    && chown -R gradq:gradq /home/gradq

USER gradq
WORKDIR /home/gradq
ENTRYPOINT ["gradq"]
CMD ["--help"]


FROM cpu AS gpu

# CuPy for CUDA 12 (the project's `cuda12` extra). python:3.11-slim has no CUDA toolkit, so
# CuPy's `ctk` extra brings its CUDA libraries (NVRTC, cuBLAS, ...) from PyPI as well.
# (An ARG ends with its stage: this one is declared again, with the same default.)
ARG EXTRAS=flower
USER root
RUN pip install "/opt/gradq[cuda12,${EXTRAS}]" "cupy-cuda12x[ctk]"
ENV NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
USER gradq
