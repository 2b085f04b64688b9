# Shards and replicas per collection and per build. Existing collections and builds get what their
# indices have (1 shard, no replica: the layout was fixed until now), not the settings' defaults
# for new collections: the field is added with 1/0, then its default becomes the settings'
# (state only, as in 0004: Django keeps defaults in Python).

import django.core.validators
import indexer.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('indexer', '0006_collection_index_options_default_from_the_engine'),
    ]

    operations = [
        migrations.AddField(
            model_name='collection',
            name='shards',
            field=models.PositiveSmallIntegerField(default=1),
        ),
        migrations.AddField(
            model_name='collection',
            name='replicas',
            field=models.PositiveSmallIntegerField(default=0),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='collection',
                    name='shards',
                    field=models.PositiveSmallIntegerField(default=indexer.models.default_shards, help_text="Primary shards of the collection's index (Elasticsearch). Changing it takes a rebuild.", validators=[django.core.validators.MinValueValidator(1), django.core.validators.MaxValueValidator(64)]),
                ),
                migrations.AlterField(
                    model_name='collection',
                    name='replicas',
                    field=models.PositiveSmallIntegerField(default=indexer.models.default_replicas, help_text='Copies of each shard on other nodes: 1 or more on a cluster keeps searches and indexing going when a node stops; 0 on a single node. Changing it takes a rebuild.', validators=[django.core.validators.MaxValueValidator(8)]),
                ),
            ],
            database_operations=[],
        ),
        migrations.AddField(
            model_name='indexbuild',
            name='shards',
            field=models.PositiveSmallIntegerField(default=1),
        ),
        migrations.AddField(
            model_name='indexbuild',
            name='replicas',
            field=models.PositiveSmallIntegerField(default=0),
        ),
    ]
