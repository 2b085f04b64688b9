# The default of Collection.index_options comes from the engine (indexer.store.default_index_options:
# bbq_hnsw on Elasticsearch, int8_hnsw on OpenSearch). Field defaults live in Python, never in the
# table, so only the migration state changes (as in 0004).

import indexer.store
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('indexer', '0005_facet_fields'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='collection',
                    name='index_options',
                    field=models.CharField(choices=[('hnsw', 'hnsw'), ('int8_hnsw', 'int8_hnsw'), ('bbq_hnsw', 'bbq_hnsw')], default=indexer.store.default_index_options, help_text='HNSW vector storage of the index: float32, int8 or binary (BBQ) quantised.', max_length=20),
                ),
            ],
            database_operations=[],
        ),
    ]
