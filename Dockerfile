FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY libs ./libs
COPY services ./services
RUN pip install --no-cache-dir .
ENV PYTHONUNBUFFERED=1
# one image, one service per container: python -m services.<name>
CMD ["python", "-m", "services.all"]
