# One image for every streamml component; the command picks the role.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1

WORKDIR /app
COPY pyproject.toml README.md ./
COPY streamml ./streamml
COPY producers ./producers
COPY stream_processors ./stream_processors
COPY model_publisher ./model_publisher
COPY consumers ./consumers
COPY streamml_cli ./streamml_cli
RUN pip install . && useradd --create-home --uid 10001 streamml

USER streamml
ENTRYPOINT ["streamml"]
CMD ["--help"]
