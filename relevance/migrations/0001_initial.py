"""Judgments and runs move here from the reranker app without losing a row.

The models are taken over as they are (state only: the tables stay), then their tables are renamed
to this app's names, and the content types (admin log entries, permissions) follow.
"""
import django.core.validators
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


def move_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("judgment", "rerankerrun"):
        ContentType.objects.filter(app_label="relevance", model=model).delete()
        ContentType.objects.filter(app_label="reranker", model=model).update(app_label="relevance")


def restore_content_types(apps, schema_editor):
    ContentType = apps.get_model("contenttypes", "ContentType")
    for model in ("judgment", "rerankerrun"):
        ContentType.objects.filter(app_label="relevance", model=model).update(app_label="reranker")


class Migration(migrations.Migration):

    initial = True

    dependencies = [
        ("reranker", "0002_reranker_runs"),
        ("indexer", "0003_language"),
        ("contenttypes", "0002_remove_content_type_name"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name='Judgment',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('query', models.CharField(max_length=1000)),
                        ('query_id', models.CharField(blank=True, help_text="The query's id in imported qrels (kept so that an export gives the same ids back).", max_length=255)),
                        ('grade', models.PositiveSmallIntegerField(help_text='0 = not relevant, 1 = relevant, up to 3 = highly relevant.', validators=[django.core.validators.MaxValueValidator(3)])),
                        ('source', models.CharField(choices=[('import', 'Imported qrels'), ('search', 'Marked on the search page'), ('admin', 'Entered in the admin')], default='admin', max_length=20)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('updated_at', models.DateTimeField(auto_now=True)),
                        ('collection', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='judgments', to='indexer.collection')),
                        ('document', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='judgments', to='indexer.document')),
                        ('judged_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'reranker_judgment',
                        'ordering': ['collection', 'query', '-grade'],
                        'indexes': [models.Index(fields=['collection', 'query'], name='reranker_ju_collect_e2b6ce_idx')],
                        'constraints': [models.UniqueConstraint(fields=('collection', 'query', 'document'), name='unique_judgment_per_query_document')],
                    },
                ),
                migrations.CreateModel(
                    name='RerankerRun',
                    fields=[
                        ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                        ('kind', models.CharField(choices=[('evaluate', 'Evaluate'), ('train', 'Train reranker')], max_length=20)),
                        ('parameters', models.JSONField(default=dict)),
                        ('status', models.CharField(choices=[('queued', 'Queued'), ('running', 'Running'), ('done', 'Done'), ('failed', 'Failed')], default='queued', max_length=20)),
                        ('progress_done', models.PositiveIntegerField(default=0)),
                        ('progress_total', models.PositiveIntegerField(default=0)),
                        ('progress_text', models.CharField(blank=True, max_length=500)),
                        ('log', models.TextField(blank=True)),
                        ('result', models.JSONField(blank=True, null=True)),
                        ('error', models.TextField(blank=True)),
                        ('task_id', models.CharField(blank=True, max_length=255)),
                        ('created_at', models.DateTimeField(auto_now_add=True)),
                        ('started_at', models.DateTimeField(blank=True, null=True)),
                        ('finished_at', models.DateTimeField(blank=True, null=True)),
                        ('reported_at', models.DateTimeField(blank=True, null=True)),
                        ('collection', models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name='reranker_runs', to='indexer.collection')),
                        ('started_by', models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.SET_NULL, related_name='+', to=settings.AUTH_USER_MODEL)),
                    ],
                    options={
                        'db_table': 'reranker_rerankerrun',
                        'ordering': ['-created_at'],
                    },
                ),
            ],
            database_operations=[],
        ),
        migrations.AlterModelTable(name="judgment", table=None),
        migrations.AlterModelTable(name="rerankerrun", table=None),
        migrations.RunPython(move_content_types, restore_content_types),
    ]
