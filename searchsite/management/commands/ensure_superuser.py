import os

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the superuser named by DJANGO_SUPERUSER_USERNAME/PASSWORD (once), or say how."

    def handle(self, *args, **options):
        username = os.environ.get("DJANGO_SUPERUSER_USERNAME")
        password = os.environ.get("DJANGO_SUPERUSER_PASSWORD")
        User = get_user_model()
        if not username or not password:
            if not User.objects.filter(is_superuser=True).exists():
                self.stdout.write(
                    "No superuser yet. Set DJANGO_SUPERUSER_USERNAME and DJANGO_SUPERUSER_PASSWORD "
                    "(and optionally DJANGO_SUPERUSER_EMAIL) before `make run`, or run "
                    "`.venv/bin/python manage.py createsuperuser`."
                )
            return
        if User.objects.filter(username=username).exists():
            self.stdout.write(f"Superuser {username!r} exists.")
            return
        User.objects.create_superuser(username, os.environ.get("DJANGO_SUPERUSER_EMAIL", ""), password)
        self.stdout.write(self.style.SUCCESS(f"Created superuser {username!r}."))
