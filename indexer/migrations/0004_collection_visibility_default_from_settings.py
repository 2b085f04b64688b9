# The default of Collection.visibility comes from settings.DEFAULT_COLLECTION_VISIBILITY. Django
# keeps field defaults in Python, never in the table, so only the migration state changes (an
# AlterField would make SQLite copy the whole table for nothing).

import indexer.models
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('indexer', '0003_language'),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name='collection',
                    name='visibility',
                    field=models.CharField(choices=[('public', 'Public (anyone)'), ('authenticated', 'Signed-in users'), ('groups', 'Selected groups')], default=indexer.models.default_visibility, max_length=20),
                ),
            ],
            database_operations=[],
        ),
    ]
