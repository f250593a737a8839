# syntax=docker/dockerfile:1
# One image for every TrainerAgent process: the gateway, the four agents and the training workers.
# docker-compose.yml picks the process with `command:` (python -m services.task, ..., python -m gateway).
#
# torch comes first, pinned, from the index named by TORCH_INDEX_URL. The default is PyTorch's CPU
# index, which keeps the image small. GPU training workers use a CUDA build instead: build with
#   --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128
# (or `TORCH_INDEX_URL=... docker compose build`), and optionally a CUDA base image through
# PYTHON_IMAGE (any image with python3.11 and pip). The CUDA wheels carry their own CUDA runtime; the
# host needs the NVIDIA driver and the NVIDIA Container Toolkit.
ARG PYTHON_IMAGE=python:3.11-slim
FROM ${PYTHON_IMAGE}

ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

RUN pip install "torch==2.13.0" --index-url "${TORCH_INDEX_URL}"

# The project's dependencies from pyproject.toml alone, so that a code change does not reinstall them
# (with no packages copied yet this installs the dependencies and an empty distribution).
COPY pyproject.toml README* ./
RUN pip install .

COPY protos/ protos/
COPY traineragent/ traineragent/
COPY inference/ inference/
COPY services/ services/
COPY gateway/ gateway/
COPY cli/ cli/
COPY scripts/ scripts/
# The project itself (the trainer-agent command); processes run from /app's source tree.
RUN pip install --no-deps --force-reinstall .

# Run as a non-root user. Each service's scratch space (TRAINERAGENT_WORK_DIR) is a volume mounted
# at /var/lib/traineragent/work; the folder exists here so that a new volume is owned by that user.
RUN useradd --create-home --uid 10001 --user-group trainer \
    && mkdir -p /var/lib/traineragent/work /data/datasets \
    && chown -R trainer:trainer /var/lib/traineragent
USER trainer
ENV TRAINERAGENT_WORK_DIR=/var/lib/traineragent/work

EXPOSE 50051

CMD ["python", "-m", "gateway"]
