# One image for all five Orderflow workers and the CLI: `orderflow worker <name>`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY pyproject.toml README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install . && useradd --system --uid 10001 orderflow

USER orderflow
ENTRYPOINT ["orderflow"]
CMD ["--help"]
