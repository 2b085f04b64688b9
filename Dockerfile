FROM python:3.11-slim
WORKDIR /app
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt
COPY . .
ENV DJANGO_SETTINGS_MODULE=searchsite.settings
# Static files (admin styles) into STATIC_ROOT once, in the image: the web process serves them
# with WhiteNoise (DEBUG off). No secret or service is needed for this step.
RUN python manage.py collectstatic --noinput
