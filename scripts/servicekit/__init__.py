"""The project's local services, behind scripts/services.py (the entry point and its usage).

    base           messages, pid files, STATE, HTTP on loopback, run-as user, JDK, Maven, apt-get
    jvm            a JVM search engine and its nodes: unpack, config, launch, wait, written once
    elasticsearch  the single Elasticsearch node and its password
    es_cluster     ES_NODES=N: N nodes of one Elasticsearch cluster
    opensearch     OpenSearch with the k-NN plugin
    redis_server   Redis
    packages       PostgreSQL's server binaries and Chromium, installed for the tests
    cli            the subcommands

Only the standard library: this runs before the virtualenv exists."""
