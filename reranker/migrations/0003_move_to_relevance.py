"""Judgments and runs belong to the relevance app now (relevance/migrations/0001_initial.py takes
their tables over): this app forgets them without touching the database."""
from django.db import migrations


class Migration(migrations.Migration):

    dependencies = [
        ("reranker", "0002_reranker_runs"),
        ("relevance", "0001_initial"),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.DeleteModel(name="RerankerRun"),
                migrations.DeleteModel(name="Judgment"),
            ],
            database_operations=[],
        ),
    ]
