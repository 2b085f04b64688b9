"""The ASGI application (`gunicorn -k uvicorn_worker.UvicornWorker searchsite.asgi`): measured
against the deployed gthread workers by bench/load.py --web-server uvicorn (docs/operating.md)."""
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "searchsite.settings")
application = get_asgi_application()
