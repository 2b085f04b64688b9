FROM python:3.11-slim
WORKDIR /app
# Maven and a JRE fetch the embedding models' jars from Maven Central (manage.py install_model).
RUN apt-get update && apt-get install -y --no-install-recommends maven default-jre-headless \
    && rm -rf /var/lib/apt/lists/*
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV DJANGO_SETTINGS_MODULE=searchsite.settings
# The default bi-encoders (EMBEDDING_MODEL, EMBEDDING_MODEL_ZH), converted once into the image.
RUN python manage.py install_model bge-small-en-v1.5 bge-small-zh-v1.5
# Static files (admin styles) into STATIC_ROOT once, in the image: the web process serves them
# with WhiteNoise (DEBUG off). No secret or service is needed for this step.
RUN python manage.py collectstatic --noinput
