from django.db import migrations, models

LANGUAGES = [
    ("en", "English: stemming and stop words"),
    ("zh", "Chinese: jieba word segmentation"),
    ("none", "no analysis: Elasticsearch's standard analyzer, no stemming or stop words, Chinese by character"),
]


class Migration(migrations.Migration):
    """Collection.language and IndexBuild.language.

    Collections and builds that exist already get `none`: their indices were built with the
    standard analyzer only, so `none` is what they serve; searches stay exactly as they were
    until someone picks a language and rebuilds. New collections default to `en`.
    """

    dependencies = [
        ("indexer", "0002_index_builds"),
    ]

    operations = [
        migrations.AddField(
            model_name="collection",
            name="language",
            field=models.CharField(choices=LANGUAGES, default="none", max_length=10),
        ),
        migrations.AlterField(
            model_name="collection",
            name="language",
            field=models.CharField(
                choices=LANGUAGES, default="en", max_length=10,
                help_text="Analysis of the keyword (BM25) stage: stemming and stop words for English, word "
                          "segmentation for Chinese, or none. Changing it takes a rebuild of the index.",
            ),
        ),
        migrations.AddField(
            model_name="indexbuild",
            name="language",
            field=models.CharField(
                choices=LANGUAGES, default="none", max_length=10,
                help_text="Keyword analysis the index was built with (indexer/analysis.py).",
            ),
            preserve_default=False,
        ),
    ]
